import { createHash } from 'node:crypto';
import { bool, checkKeys, ConfigError, duration, int, isSection, optString, section, stringList, type RawSection } from '../config/fields.js';
import { EVENT_ACTIONS, type EventAction } from './event.js';

/** One `notifications.endpoints[]` entry, as registry:2 reads it. */
export interface EndpointConfig {
  /** The endpoint's name (unique); labels its metrics and names its queue. */
  name: string;
  /** Where envelopes are POSTed (http or https). */
  url: string;
  /** Extra request headers (`headers: {X-Token: [secret]}`). */
  headers: Record<string, string[]>;
  /** Per-request timeout. */
  timeoutMs: number;
  /** Consecutive failures after which delivery waits `backoff` before retrying (before that it retries at once). */
  threshold: number;
  /** The wait after `threshold` consecutive failures (and between further attempts). */
  backoffMs: number;
  /** A disabled endpoint gets nothing queued. */
  disabled: boolean;
  /** Events whose `target.mediaType` is listed are not sent (`ignoredmediatypes` and `ignore.mediatypes`). */
  ignoredMediaTypes: string[];
  /** Events with these actions are not sent (`ignore.actions`). */
  ignoredActions: EventAction[];
  /** A storage/Redis-safe name for the queue: `[A-Za-z0-9._-]+`, distinct for distinct names. */
  queueName: string;
}

/** registry:2's `notifications` section. */
export interface NotificationsConfig {
  endpoints: EndpointConfig[];
  /** `notifications.events.includereferences`: manifest events carry `target.references`. */
  includeReferences: boolean;
}

/** Keys accepted under `notifications` (for the config's table of known keys). */
export const NOTIFICATION_KEYS = ['events', 'endpoints'] as const;
/** Keys accepted under `notifications.events`. */
export const NOTIFICATION_EVENTS_KEYS = ['includereferences'] as const;
/** Keys accepted under each `notifications.endpoints[]` entry. */
export const ENDPOINT_KEYS = ['name', 'url', 'headers', 'timeout', 'threshold', 'backoff', 'disabled', 'ignoredmediatypes', 'ignore'] as const;
/** Keys accepted under `notifications.endpoints[].ignore`. */
export const ENDPOINT_IGNORE_KEYS = ['mediatypes', 'actions'] as const;

/** A queue name safe as a storage path component and a Redis key part: the name's safe characters and a hash. */
function queueNameOf(name: string): string {
  const safe = name.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64);
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${safe.replace(/^\.+/, '_')}-${hash}`;
}

/**
 * Parses the raw `notifications` section (absent: no endpoints). Fails closed: an endpoint without a name or with a
 * URL that is not http(s), two endpoints with one name, or an unknown action stop startup naming the key.
 */
export function parseNotifications(raw: unknown, warn: (msg: string) => void): NotificationsConfig {
  if (raw === undefined || raw === null || raw === '') return { endpoints: [], includeReferences: false };
  if (!isSection(raw)) throw new ConfigError(`notifications: expected a section, got ${JSON.stringify(raw)}`);
  checkKeys(raw, 'notifications.', NOTIFICATION_KEYS, warn);
  const events = section(raw, 'events', 'notifications.');
  checkKeys(events, 'notifications.events.', NOTIFICATION_EVENTS_KEYS, warn);
  const includeReferences = bool(events, 'includereferences', 'notifications.events.', false);
  const list = raw.endpoints ?? [];
  if (!Array.isArray(list)) throw new ConfigError(`notifications.endpoints: expected a list, got ${JSON.stringify(list)}`);
  const endpoints: EndpointConfig[] = [];
  const seen = new Set<string>();
  list.forEach((entry: unknown, i: number) => {
    const path = `notifications.endpoints[${i}].`;
    if (!isSection(entry)) throw new ConfigError(`${path.slice(0, -1)}: expected a section, got ${JSON.stringify(entry)}`);
    checkKeys(entry, path, ENDPOINT_KEYS, warn);
    const name = optString(entry, 'name', path);
    if (name === undefined) throw new ConfigError(`${path}name: required`);
    if (seen.has(name)) throw new ConfigError(`${path}name: ${JSON.stringify(name)} is used by two endpoints`);
    seen.add(name);
    const url = optString(entry, 'url', path);
    if (url === undefined) throw new ConfigError(`${path}url: required`);
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConfigError(`${path}url: not a URL: ${JSON.stringify(url)}`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
      throw new ConfigError(`${path}url: expected an http or https URL, got ${JSON.stringify(url)}`);
    const headers: Record<string, string[]> = {};
    for (const [k, v] of Object.entries(section(entry, 'headers', path))) {
      if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(k)) throw new ConfigError(`${path}headers: invalid header name ${JSON.stringify(k)}`);
      const values = Array.isArray(v) ? v.map(String) : [String(v)];
      if (values.some((x) => /[\r\n]/.test(x))) throw new ConfigError(`${path}headers.${k}: a value contains a line break`);
      headers[k] = values;
    }
    const ignore = section(entry, 'ignore', path);
    checkKeys(ignore, `${path}ignore.`, ENDPOINT_IGNORE_KEYS, warn);
    const actions = stringList(ignore, 'actions', `${path}ignore.`);
    for (const a of actions) {
      if (!(EVENT_ACTIONS as readonly string[]).includes(a)) {
        throw new ConfigError(`${path}ignore.actions: expected ${EVENT_ACTIONS.join(', ')}, got ${JSON.stringify(a)}`);
      }
    }
    endpoints.push({
      name,
      url,
      headers,
      timeoutMs: duration(entry, 'timeout', path, 1000),
      threshold: int(entry, 'threshold', path, 10),
      backoffMs: duration(entry, 'backoff', path, 1000),
      disabled: bool(entry, 'disabled', path, false),
      ignoredMediaTypes: [...stringList(entry, 'ignoredmediatypes', path), ...stringList(ignore, 'mediatypes', `${path}ignore.`)],
      ignoredActions: actions as EventAction[],
      queueName: queueNameOf(name),
    });
  });
  return { endpoints, includeReferences };
}

/** `audit` (or `berth.audit`): where the audit trail goes besides the process log. */
export interface AuditConfig {
  /** `audit.file`: also append the audit lines to this file. */
  file?: string;
}

/**
 * Parses the top-level `audit` section, or `berth.audit` (the same keys; naming both is refused, so no setting is
 * silently ignored). Absent: audit lines go to the process log only. `raw` is the whole configuration tree.
 */
export function parseAuditConfig(raw: RawSection, warn: (msg: string) => void): AuditConfig {
  const top = section(raw, 'audit', '');
  const nested = section(section(raw, 'berth', ''), 'audit', 'berth.');
  if (Object.keys(top).length > 0 && Object.keys(nested).length > 0) {
    throw new ConfigError('audit: named both at the top level and under berth; keep one');
  }
  const [audit, prefix] = Object.keys(top).length > 0 ? [top, 'audit.'] : [nested, 'berth.audit.'];
  checkKeys(audit, prefix, ['file'], warn);
  const file = optString(audit, 'file', prefix);
  return file === undefined ? {} : { file };
}
