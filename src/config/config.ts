import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { bool, ConfigError, duration, int, isSection, optString, section, str, stringList, type RawSection } from './fields.js';
import { parseS3Config, type S3DriverOptions } from './s3.js';
import { CONFIG_SCHEMA, checkSchema } from './schema.js';
import { parseLetsEncrypt, type LetsEncryptSettings } from './letsencrypt.js';

/**
 * berth's configuration: Distribution's `config.yml` shape for everything both support (a registry:2 config file
 * loads as is), berth-only options under `berth:`. `REGISTRY_<SECTION>_<KEY>` environment variables override the
 * file as in Distribution. Every option, with its default, is documented in `config.example.yaml`.
 */
export interface Config {
  log: {
    level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
    /** `auto` (unset): text on a terminal, JSON otherwise. */
    formatter: 'json' | 'text' | 'auto';
    accessLog: boolean;
    fields: Record<string, string>;
  };
  storage: {
    driver: 'filesystem' | 's3';
    /** `directwrites`: blob data written around the page cache (O_DIRECT) where the file system allows. */
    filesystem: { rootDirectory: string; directWrites: boolean };
    /** `storage.s3`, parsed (present when the driver is s3). */
    s3?: S3DriverOptions;
    deleteEnabled: boolean;
    redirectDisabled: boolean;
    uploadPurging: { enabled: boolean; ageMs: number; intervalMs: number; dryRun: boolean };
    readOnly: boolean;
  };
  http: {
    /** `host:port` or `:port` */
    addr: string;
    /** External base URL used for absolute `Location` headers, e.g. `https://registry.example.com`. */
    host?: string;
    headers: Record<string, string[]>;
    /** `certificate` + `key` (files, reloaded when they change), or `letsencrypt` (ACME): one or the other. */
    tls?: {
      certificate?: string;
      key?: string;
      letsencrypt?: LetsEncryptSettings;
      /** `clientcas`: CA certificate files; when set, a client must present a certificate one of them signed. */
      clientCAs?: string[];
      /** `minimumtls`, in Node's spelling. */
      minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
    };
  };
  redis?: { addr: string; username?: string; password?: string; db: number; keyPrefix: string };
  /** The raw `auth` section; parsed by the auth module. */
  auth?: RawSection;
  /** The raw `proxy` section; parsed by the pull-through module. */
  proxy?: RawSection;
  /** The raw `notifications` section (registry:2's webhook endpoints); parsed by the events module. */
  notifications?: RawSection;
  berth: {
    /** Mount a blob named by `?mount=` without `from` when the registry has it in any repository. */
    automaticCrossMount: boolean;
    /** How long an upload session lives without activity. */
    uploadSessionTtlMs: number;
    /** How long SIGTERM waits for in-flight requests. */
    shutdownTimeoutMs: number;
    /** A connection on which nothing moves for this long is closed (0: never). */
    idleTimeoutMs: number;
    /**
     * `berth.linkcache`: link files (tags, repository links) kept in memory, invalidated by every
     * change (across processes through Redis when `redis` is set); `ttlMs` 0 turns it off.
     */
    linkCache: { ttlMs: number; maxEntries: number };
    /** Raw berth sections owned by other modules (metrics, gc schedule, ...). */
    raw: RawSection;
  };
  /**
   * The whole raw tree (file merged with `REGISTRY_*`), keys checked against the schema, for the sections other
   * modules read themselves (`notifications`, `ui`, `audit`, `index`, ...).
   */
  raw: RawSection;
  /** The web UI (`/ui/`; `/` redirects there while it is on). */
  ui: { enabled: boolean };
  /** Warnings collected while loading (unknown keys, ignored options). */
  warnings: string[];
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

/** The keys of `storage` that name a driver and of `auth` that name an authentication type (registry:2's and berth's). */
const TYPE_KEYS: Readonly<Record<string, readonly string[]>> = {
  storage: ['filesystem', 's3', 'inmemory', 'azure', 'gcs', 'swift', 'oss'],
  auth: ['htpasswd', 'token', 'silly'],
};

/**
 * `REGISTRY_STORAGE=s3` / `REGISTRY_AUTH=htpasswd`: registry:2's env-only way to pick the storage driver or the
 * authentication type (helm charts and compose files use it), with its options in `REGISTRY_STORAGE_S3_*` etc.
 * The named type replaces any other driver (or auth type) from the file; the other keys of the section (`delete`,
 * `maintenance`, `auth.builtin`, ...) stay.
 */
function selectType(raw: RawSection, section: string, value: unknown, name: string): void {
  if (typeof value !== 'string' || !/^[a-z0-9_]+$/i.test(value)) {
    throw new ConfigError(
      `${name}: expected a ${section === 'storage' ? 'storage driver name such as s3' : 'type such as htpasswd or token'}, got ${JSON.stringify(value)}`,
    );
  }
  const type = value.toLowerCase();
  const current = raw[section];
  const kept: RawSection = {};
  if (isSection(current)) {
    for (const [k, v] of Object.entries(current)) if (!(TYPE_KEYS[section] ?? []).includes(k) || k === type) kept[k] = v;
  }
  if (!isSection(kept[type])) kept[type] = {};
  raw[section] = kept;
}

/**
 * Sets `REGISTRY_A_B_C=value` as `a.b.c` in the raw tree, in name order (so `REGISTRY_STORAGE=s3` comes before
 * `REGISTRY_STORAGE_S3_BUCKET`). Values are parsed as YAML scalars, as Distribution does.
 */
export function applyEnvOverrides(raw: RawSection, env: NodeJS.ProcessEnv, warn: (msg: string) => void): void {
  const names = Object.keys(env)
    .filter((k) => k.startsWith('REGISTRY_') && k !== 'REGISTRY_CONFIGURATION_PATH')
    .sort();
  for (const name of names) {
    const value = env[name];
    if (value === undefined) continue;
    const parts = name
      .slice('REGISTRY_'.length)
      .toLowerCase()
      .split('_')
      .filter((p) => p.length > 0);
    if (parts.length === 0) continue;
    if (CONFIG_SCHEMA['']?.keys[parts[0] as string] === undefined) {
      // Not a config section: Kubernetes sets REGISTRY_PORT, REGISTRY_SERVICE_HOST, ... for a Service named
      // "registry". registry:2 ignores such variables with a warning; so does berth (a typo inside a section is not
      // ignored: the file's rules apply to it).
      warn(`${name}: no configuration section ${JSON.stringify(parts[0])}; variable ignored`);
      continue;
    }
    let parsed: unknown = value;
    try {
      parsed = parseYaml(value);
    } catch {
      parsed = value;
    }
    if (parsed === null) parsed = '';
    if (parts.length === 1 && TYPE_KEYS[parts[0] as string] && !isSection(parsed)) {
      if (parsed !== '') selectType(raw, parts[0] as string, parsed, name);
      continue;
    }
    let node: RawSection = raw;
    let ok = true;
    for (const p of parts.slice(0, -1)) {
      const next = node[p];
      if (next === undefined || next === null || next === '') {
        const created: RawSection = {};
        node[p] = created;
        node = created;
      } else if (isSection(next)) {
        node = next;
      } else {
        warn(`${name}: ${p} is not a section; override ignored`);
        ok = false;
        break;
      }
    }
    if (ok) node[parts[parts.length - 1] as string] = parsed;
  }
}

/** Parses `host:port`, `:port` or `port`; throws naming `http.addr`. */
export function parseListenAddress(addr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(addr) ?? /^()()(\d+)$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError(`http.addr: expected host:port or :port, got ${JSON.stringify(addr)}`);
  }
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '0.0.0.0' : host, port };
}

/** `http.tls.minimumtls` values (registry:2's spelling) and Node's names for them. */
const TLS_VERSIONS: Readonly<Record<string, 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'>> = {
  'tls1.0': 'TLSv1',
  'tls1.1': 'TLSv1.1',
  'tls1.2': 'TLSv1.2',
  'tls1.3': 'TLSv1.3',
};

/**
 * Builds a Config from a raw YAML tree (already merged with environment overrides). Every key is first checked
 * against the schema (`schema.ts`): a refused or, where it matters, unknown key throws a ConfigError naming it.
 */
export function normalizeConfig(raw: RawSection, warnings: string[] = []): Config {
  const warn = (m: string) => warnings.push(m);
  for (const w of checkSchema(raw)) warn(w);

  const log = section(raw, 'log', '');
  const fieldsRaw = section(log, 'fields', 'log.');
  const fields: Record<string, string> = {};
  for (const [k, v] of Object.entries(fieldsRaw)) fields[k] = String(v);
  const level = (optString(log, 'level', 'log.') ?? 'info').toLowerCase();
  if (!(LEVELS as readonly string[]).includes(level)) {
    throw new ConfigError(`log.level: expected one of ${LEVELS.join(', ')}, got ${JSON.stringify(level)}`);
  }
  const formatterRaw = (optString(log, 'formatter', 'log.') ?? 'auto').toLowerCase();
  const formatter = formatterRaw === 'logstash' ? 'json' : formatterRaw;
  if (formatter !== 'json' && formatter !== 'text' && formatter !== 'auto') {
    throw new ConfigError(`log.formatter: expected json, text, logstash or auto, got ${JSON.stringify(formatterRaw)}`);
  }
  const accessLog = !bool(section(log, 'accesslog', 'log.'), 'disabled', 'log.accesslog.', false);

  const storage = section(raw, 'storage', '');
  const drivers = ['filesystem', 's3'].filter((d) => storage[d] !== undefined && storage[d] !== null);
  if (drivers.length > 1) throw new ConfigError(`storage: configure one driver, found ${drivers.join(' and ')}`);
  const driver = (drivers[0] ?? 'filesystem') as 'filesystem' | 's3';
  const fs = section(storage, 'filesystem', 'storage.');
  const maintenance = section(storage, 'maintenance', 'storage.');
  const purging = section(maintenance, 'uploadpurging', 'storage.maintenance.');
  const redirect = section(storage, 'redirect', 'storage.');
  const del = section(storage, 'delete', 'storage.');
  // Parsed here, with everything else, so its errors stop every command and its warnings are in the one list.
  const s3 = driver === 's3' ? parseS3Config(section(storage, 's3', 'storage.'), warn) : undefined;

  const http = section(raw, 'http', '');
  const addr = str(http, 'addr', 'http.', ':5000');
  parseListenAddress(addr);
  const host = optString(http, 'host', 'http.');
  if (host !== undefined && !/^https?:\/\/[^/\s]+\/?$/.test(host)) {
    throw new ConfigError(`http.host: expected a base URL such as https://registry.example.com, got ${JSON.stringify(host)}`);
  }
  // http.secret: registry:2 signs the upload state it hands to clients with it. berth keeps upload state on the
  // server (the session store), so there is nothing to sign: the key is accepted (registry:2 files carry it) and
  // not read. It is not part of the typed config, so it is never logged or printed.
  optString(http, 'secret', 'http.');
  const headers: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(section(http, 'headers', 'http.'))) {
    headers[k] = Array.isArray(v) ? v.map(String) : [String(v)];
  }
  const tlsRaw = section(http, 'tls', 'http.');
  const certificate = optString(tlsRaw, 'certificate', 'http.tls.');
  const key = optString(tlsRaw, 'key', 'http.tls.');
  if ((certificate === undefined) !== (key === undefined)) throw new ConfigError('http.tls: certificate and key go together');
  const clientCAs = stringList(tlsRaw, 'clientcas', 'http.tls.');
  const minimumTlsRaw = optString(tlsRaw, 'minimumtls', 'http.tls.');
  const minVersion = minimumTlsRaw === undefined ? undefined : TLS_VERSIONS[minimumTlsRaw.toLowerCase()];
  if (minimumTlsRaw !== undefined && minVersion === undefined) {
    throw new ConfigError(`http.tls.minimumtls: expected one of ${Object.keys(TLS_VERSIONS).join(', ')}, got ${JSON.stringify(minimumTlsRaw)}`);
  }
  const letsencrypt = parseLetsEncrypt(tlsRaw, warn);
  if (letsencrypt && certificate !== undefined) {
    throw new ConfigError('http.tls: configure either certificate/key or letsencrypt, not both');
  }
  if (clientCAs.length > 0 && certificate === undefined && !letsencrypt) {
    throw new ConfigError('http.tls.clientcas: needs http.tls.certificate and http.tls.key (client certificates are checked in the TLS handshake)');
  }

  let redis: Config['redis'];
  const redisRaw = section(raw, 'redis', '');
  const redisAddr = optString(redisRaw, 'addr', 'redis.');
  if (redisAddr !== undefined) {
    redis = {
      addr: redisAddr,
      db: int(redisRaw, 'db', 'redis.', 0),
      keyPrefix: str(redisRaw, 'keyprefix', 'redis.', 'berth:'),
    };
    const username = optString(redisRaw, 'username', 'redis.');
    const password = optString(redisRaw, 'password', 'redis.');
    if (username !== undefined) redis.username = username;
    if (password !== undefined) redis.password = password;
  } else if (Object.keys(redisRaw).some((k) => redisRaw[k] !== undefined && redisRaw[k] !== null)) {
    throw new ConfigError('redis.addr: required when the redis section is given (without it upload sessions would stay in this process)');
  }

  const berth = section(raw, 'berth', '');
  const auth = section(raw, 'auth', '');
  const proxy = section(raw, 'proxy', '');
  const linkCache = section(berth, 'linkcache', 'berth.');
  const linkCacheEntries = int(linkCache, 'entries', 'berth.linkcache.', 20_000, 1);

  const ui = section(raw, 'ui', '');

  const config: Config = {
    log: { level: level as Config['log']['level'], formatter, accessLog, fields },
    storage: {
      driver,
      filesystem: {
        rootDirectory: str(fs, 'rootdirectory', 'storage.filesystem.', './data'),
        directWrites: bool(fs, 'directwrites', 'storage.filesystem.', true),
      },
      deleteEnabled: bool(del, 'enabled', 'storage.delete.', false),
      redirectDisabled: bool(redirect, 'disable', 'storage.redirect.', false),
      uploadPurging: {
        enabled: bool(purging, 'enabled', 'storage.maintenance.uploadpurging.', true),
        ageMs: duration(purging, 'age', 'storage.maintenance.uploadpurging.', 168 * 3_600_000),
        intervalMs: duration(purging, 'interval', 'storage.maintenance.uploadpurging.', 24 * 3_600_000),
        dryRun: bool(purging, 'dryrun', 'storage.maintenance.uploadpurging.', false),
      },
      readOnly: bool(section(maintenance, 'readonly', 'storage.maintenance.'), 'enabled', 'storage.maintenance.readonly.', false),
    },
    http: { addr, headers },
    berth: {
      automaticCrossMount: bool(berth, 'automaticcrossmount', 'berth.', true),
      uploadSessionTtlMs: duration(berth, 'uploadsessionttl', 'berth.', 24 * 3_600_000),
      shutdownTimeoutMs: duration(berth, 'shutdowntimeout', 'berth.', 30_000),
      idleTimeoutMs: duration(berth, 'idletimeout', 'berth.', 5 * 60_000),
      linkCache: { ttlMs: duration(linkCache, 'ttl', 'berth.linkcache.', 5_000), maxEntries: linkCacheEntries },
      raw: berth,
    },
    raw,
    ui: { enabled: bool(ui, 'enabled', 'ui.', true) },
    warnings,
  };
  if (s3) config.storage.s3 = s3;
  if (host !== undefined) config.http.host = host.replace(/\/$/, '');
  if ((certificate !== undefined && key !== undefined) || letsencrypt) {
    const tls: NonNullable<Config['http']['tls']> = letsencrypt ? { letsencrypt } : {};
    if (certificate !== undefined) tls.certificate = certificate;
    if (key !== undefined) tls.key = key;
    if (clientCAs.length > 0) tls.clientCAs = clientCAs;
    if (minVersion !== undefined) tls.minVersion = minVersion;
    config.http.tls = tls;
  } else if (minVersion !== undefined) {
    throw new ConfigError('http.tls.minimumtls: needs http.tls.certificate and http.tls.key, or http.tls.letsencrypt');
  }
  if (redis) config.redis = redis;
  if (Object.keys(auth).length > 0) config.auth = auth;
  if (Object.keys(proxy).length > 0) config.proxy = proxy;
  // One list: a key two parsers warn about is reported once.
  const unique = [...new Set(warnings)];
  warnings.splice(0, warnings.length, ...unique);
  if (raw.notifications !== undefined && raw.notifications !== null) {
    if (!isSection(raw.notifications)) throw new ConfigError(`notifications: expected a section, got ${JSON.stringify(raw.notifications)}`);
    config.notifications = raw.notifications;
  }
  return config;
}

/** Parses YAML text into a raw tree (empty text is an empty config). */
export function parseConfigText(text: string, source: string): RawSection {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`${source}: not valid YAML: ${(err as Error).message}`);
  }
  if (raw === null || raw === undefined) return {};
  if (!isSection(raw)) throw new ConfigError(`${source}: expected a YAML mapping at the top level`);
  return raw;
}

/** Loads a config file (optional), applies `REGISTRY_*` overrides from `env` and validates. */
export async function loadConfig(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  const warnings: string[] = [];
  let raw: RawSection = {};
  if (file) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why =
        code === 'EISDIR'
          ? 'it is a directory, not a file'
          : code === 'ENOENT'
            ? 'no such file'
            : code === 'EACCES' || code === 'EPERM'
              ? 'permission denied'
              : (code ?? (err as Error).message);
      throw new ConfigError(`cannot read config file ${resolve(file)}: ${why}`);
    }
    raw = parseConfigText(text, file);
  }
  applyEnvOverrides(raw, env, (m) => warnings.push(m));
  return normalizeConfig(raw, warnings);
}

/** A config for tests and embedding: the defaults with `raw` merged in. */
export function configFrom(raw: RawSection): Config {
  return normalizeConfig(raw, []);
}

export { ConfigError };
