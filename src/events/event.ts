import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { RequestContext } from '../registry/request-context.js';

export type { RequestContext } from '../registry/request-context.js';

/**
 * Registry events as CNCF Distribution 2.8 (registry:2) sends them to its `notifications` endpoints, field by field
 * (names, order, which fields are left out when empty), recorded from Debian's `docker-registry`:
 *
 * ```
 * POST <endpoint url>
 * Content-Type: application/vnd.docker.distribution.events.v1+json
 * {
 *    "events": [
 *       {
 *          "id": "<uuid>", "timestamp": "<RFC 3339, nanoseconds>", "action": "push" | "pull" | "delete" | "mount",
 *          "target": { "mediaType", "size", "digest", "length", "repository", "fromRepository", "url", "tag",
 *                      "references": [{ "mediaType", "size", "digest", ... }] },
 *          "request": { "id", "addr", "host", "method", "useragent" },
 *          "actor": { "name" },
 *          "source": { "addr", "instanceID" }
 *       }
 *    ]
 * }
 * ```
 * The body is indented by three spaces, as Go's `json.MarshalIndent(envelope, "", "   ")` writes it.
 */

/** The media type of an envelope (`Content-Type` of every notification request). */
export const EVENTS_MEDIA_TYPE = 'application/vnd.docker.distribution.events.v1+json';

/** What happened: registry:2's four actions. */
export type EventAction = 'push' | 'pull' | 'delete' | 'mount';

/** Every action, for config validation (`ignore.actions`). */
export const EVENT_ACTIONS: readonly EventAction[] = ['push', 'pull', 'delete', 'mount'];

/** registry:2 reports every blob as this media type (its blob descriptors carry no other). */
export const BLOB_MEDIA_TYPE = 'application/octet-stream';

/** A descriptor in `target.references` (the manifest's config, layers, or an index's manifests), as written there. */
export interface EventReference {
  mediaType: string;
  size: number;
  digest: string;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Record<string, unknown>;
}

/** What an event is about, without the request-dependent `url`. */
export interface EventSubject {
  /** Repository name. */
  repository: string;
  /** The manifest or blob; absent for a tag delete. */
  digest?: string;
  /** Media type: the manifest's, `application/octet-stream` for blobs. Absent for deletes (registry:2 sends none). */
  mediaType?: string;
  /** Size in bytes (sent as both `size` and `length`, as registry:2 does). */
  size?: number;
  /** The tag a manifest was pushed or pulled by, or the tag deleted. */
  tag?: string;
  /** For `mount`: the repository the blob came from, when known. */
  fromRepository?: string;
  /** The manifest's references; sent when `notifications.events.includereferences` is true. */
  references?: EventReference[];
  /** `manifest` or `blob`: decides the `url` path. Absent for tag deletes (no `url` then). */
  kind?: 'manifest' | 'blob';
}

/** The context of garbage collection's deletions: no client request, so empty `request` and `actor`, no `url`. */
export const GC_CONTEXT: RequestContext = { id: '', addr: '', host: '', method: '', useragent: '', baseUrl: '', origin: 'gc' };

/**
 * The context of a change made by a berth command (`berth repo rm`) in its own process: no client request, so no
 * `request.addr`, `method` or `url`; `request.id` is fresh, `request.host` is the machine, `request.useragent` names
 * the command (`berth repo rm`), `actor.name` is the operating-system user who ran it (`user`, when known) and the
 * audit line says `origin: "cli"`.
 */
export function cliContext(command: string, user: string): RequestContext {
  const ctx: RequestContext = { id: randomUUID(), addr: '', host: hostname(), method: '', useragent: `berth ${command}`, baseUrl: '', origin: 'cli' };
  if (user) ctx.user = user;
  return ctx;
}

/** Where the events come from: `source` of every event. */
export interface EventSource {
  /** `hostname:port` of the listen address, as registry:2 sends it. */
  addr: string;
  /** A random id per process start. */
  instanceID: string;
}

/** The JSON of one event (what receivers get). */
export interface RegistryEvent {
  id: string;
  timestamp: string;
  action: EventAction;
  target: Record<string, unknown>;
  request: Record<string, string>;
  actor: { name?: string };
  source: EventSource;
}

/** An ISO timestamp with nanosecond digits, the shape of Go's RFC3339Nano (trailing zeros dropped as Go does). */
export function rfc3339Nano(date: Date): string {
  const iso = date.toISOString();
  const ms = iso.slice(20, 23).replace(/0+$/, '');
  return `${iso.slice(0, 19)}${ms ? `.${ms}` : ''}Z`;
}

/** Builds one event with registry:2's field order and omissions. */
export function buildEvent(
  action: EventAction,
  subject: EventSubject,
  ctx: RequestContext,
  source: EventSource,
  options: { includeReferences: boolean; now?: Date },
): RegistryEvent {
  const target: Record<string, unknown> = {};
  if (subject.mediaType) target.mediaType = subject.mediaType;
  if (subject.size !== undefined) target.size = subject.size;
  if (subject.digest) target.digest = subject.digest;
  if (subject.size !== undefined) target.length = subject.size;
  if (subject.repository) target.repository = subject.repository;
  if (subject.fromRepository) target.fromRepository = subject.fromRepository;
  if (subject.kind && subject.digest && ctx.baseUrl && action !== 'delete') {
    target.url = `${ctx.baseUrl}/v2/${subject.repository}/${subject.kind === 'manifest' ? 'manifests' : 'blobs'}/${subject.digest}`;
  }
  if (subject.tag) target.tag = subject.tag;
  if (options.includeReferences && subject.references && subject.references.length > 0) target.references = subject.references;
  const request: Record<string, string> = {};
  for (const key of ['id', 'addr', 'host', 'method', 'useragent'] as const) if (ctx[key]) request[key] = ctx[key];
  return {
    id: randomUUID(),
    timestamp: rfc3339Nano(options.now ?? new Date()),
    action,
    target,
    request,
    actor: ctx.user ? { name: ctx.user } : {},
    source: { ...source },
  };
}

/** The body of a notification request: `{"events": [...]}`, indented as registry:2 writes it. */
export function envelope(events: RegistryEvent[]): string {
  return JSON.stringify({ events }, null, 3);
}

/**
 * The address registry:2 reports for a client (`RemoteAddr` in its context package): the first `X-Forwarded-For`
 * entry, else `X-Real-Ip`, else the socket's `ip:port`.
 */
export function clientAddr(
  headers: Record<string, string | string[] | undefined>,
  remoteAddress: string | undefined,
  remotePort: number | undefined,
): string {
  const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);
  const forwarded = first(headers['x-forwarded-for']);
  if (forwarded) {
    const ip = forwarded.split(',')[0]?.trim();
    if (ip) return ip;
  }
  const real = first(headers['x-real-ip']);
  if (real) return real.trim();
  if (!remoteAddress) return '';
  const host = remoteAddress.includes(':') ? `[${remoteAddress}]` : remoteAddress;
  return remotePort === undefined ? host : `${host}:${remotePort}`;
}

/** Descriptor fields in the order Distribution marshals them (`distribution.Descriptor`). */
const DESCRIPTOR_FIELDS = ['mediaType', 'size', 'digest', 'urls', 'annotations', 'platform'] as const;

function descriptorOf(raw: unknown): EventReference | null {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return null;
  const src = raw as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of DESCRIPTOR_FIELDS) if (src[k] !== undefined && src[k] !== null && src[k] !== '') out[k] = src[k];
  return out as unknown as EventReference;
}

/**
 * `target.references` of a manifest as registry:2 computes them (`Manifest.References()`): an index's or manifest
 * list's `manifests`, else the config followed by the layers. Empty for what cannot be read.
 */
export function manifestReferences(bytes: Buffer): EventReference[] {
  let body: unknown;
  try {
    body = JSON.parse(bytes.toString('utf8'));
  } catch {
    return [];
  }
  if (typeof body !== 'object' || body === null) return [];
  const m = body as { manifests?: unknown; config?: unknown; layers?: unknown };
  const list: unknown[] = Array.isArray(m.manifests)
    ? (m.manifests as unknown[])
    : [m.config, ...(Array.isArray(m.layers) ? (m.layers as unknown[]) : [])];
  return list.map(descriptorOf).filter((d): d is EventReference => d !== null);
}
