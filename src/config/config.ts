import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { bool, checkKeys, ConfigError, duration, int, isSection, optString, section, str, type RawSection } from './fields.js';

/**
 * berth's configuration: Distribution's `config.yml` shape for everything both support (a registry:2 config file
 * loads as is), berth-only options under `berth:`. `REGISTRY_<SECTION>_<KEY>` environment variables override the
 * file as in Distribution. Every option, with its default, is documented in `config.example.yaml`.
 */
export interface Config {
  log: {
    level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
    formatter: 'json' | 'text';
    accessLog: boolean;
    fields: Record<string, string>;
  };
  storage: {
    driver: 'filesystem' | 's3';
    filesystem: { rootDirectory: string };
    /** The raw `storage.s3` section; parsed by the S3 driver. */
    s3?: RawSection;
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
    secret?: string;
    headers: Record<string, string[]>;
    tls?: { certificate: string; key: string };
  };
  redis?: { addr: string; username?: string; password?: string; db: number; keyPrefix: string };
  /** The raw `auth` section; parsed by the auth module. */
  auth?: RawSection;
  /** The raw `proxy` section; parsed by the pull-through module. */
  proxy?: RawSection;
  berth: {
    /** Mount a blob named by `?mount=` without `from` when the registry has it in any repository. */
    automaticCrossMount: boolean;
    /** How long an upload session lives without activity. */
    uploadSessionTtlMs: number;
    /** How long SIGTERM waits for in-flight requests. */
    shutdownTimeoutMs: number;
    /** A connection on which nothing moves for this long is closed (0: never). */
    idleTimeoutMs: number;
    /** Raw berth sections owned by other modules (metrics, gc schedule, ...). */
    raw: RawSection;
  };
  /** The web UI (`/ui/`; `/` redirects there while it is on). */
  ui: { enabled: boolean };
  /** Warnings collected while loading (unknown keys, ignored options). */
  warnings: string[];
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

/** Sets `REGISTRY_A_B_C=value` as `a.b.c` in the raw tree. Values are parsed as YAML scalars, as Distribution does. */
export function applyEnvOverrides(raw: RawSection, env: NodeJS.ProcessEnv, warn: (msg: string) => void): void {
  const names = Object.keys(env).filter((k) => k.startsWith('REGISTRY_')).sort();
  for (const name of names) {
    const value = env[name];
    if (value === undefined) continue;
    const parts = name.slice('REGISTRY_'.length).toLowerCase().split('_').filter((p) => p.length > 0);
    if (parts.length === 0) continue;
    let parsed: unknown = value;
    try {
      parsed = parseYaml(value);
    } catch {
      parsed = value;
    }
    if (parsed === null) parsed = '';
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

/** Builds a Config from a raw YAML tree (already merged with environment overrides). */
export function normalizeConfig(raw: RawSection, warnings: string[] = []): Config {
  const warn = (m: string) => warnings.push(m);
  checkKeys(raw, '', ['version', 'log', 'storage', 'http', 'redis', 'auth', 'proxy', 'berth', 'ui'], warn, [
    'loglevel', 'reporting', 'notifications', 'health', 'middleware', 'validation', 'compatibility', 'catalog',
  ]);

  const log = section(raw, 'log', '');
  checkKeys(log, 'log.', ['level', 'formatter', 'fields', 'accesslog'], warn, ['hooks', 'reportcaller']);
  const fieldsRaw = section(log, 'fields', 'log.');
  const fields: Record<string, string> = {};
  for (const [k, v] of Object.entries(fieldsRaw)) fields[k] = String(v);
  const level = (optString(log, 'level', 'log.') ?? 'info').toLowerCase();
  if (!(LEVELS as readonly string[]).includes(level)) {
    throw new ConfigError(`log.level: expected one of ${LEVELS.join(', ')}, got ${JSON.stringify(level)}`);
  }
  const formatterRaw = (optString(log, 'formatter', 'log.') ?? 'json').toLowerCase();
  const formatter = formatterRaw === 'logstash' ? 'json' : formatterRaw;
  if (formatter !== 'json' && formatter !== 'text') {
    throw new ConfigError(`log.formatter: expected json, text or logstash, got ${JSON.stringify(formatterRaw)}`);
  }
  const accessLog = !bool(section(log, 'accesslog', 'log.'), 'disabled', 'log.accesslog.', false);

  const storage = section(raw, 'storage', '');
  checkKeys(storage, 'storage.', ['filesystem', 's3', 'delete', 'redirect', 'maintenance', 'cache'], warn, ['inmemory', 'tag']);
  const drivers = ['filesystem', 's3'].filter((d) => storage[d] !== undefined && storage[d] !== null);
  if (drivers.length > 1) throw new ConfigError(`storage: configure one driver, found ${drivers.join(' and ')}`);
  const driver = (drivers[0] ?? 'filesystem') as 'filesystem' | 's3';
  const fs = section(storage, 'filesystem', 'storage.');
  checkKeys(fs, 'storage.filesystem.', ['rootdirectory'], warn, ['maxthreads']);
  const maintenance = section(storage, 'maintenance', 'storage.');
  checkKeys(maintenance, 'storage.maintenance.', ['uploadpurging', 'readonly'], warn);
  const purging = section(maintenance, 'uploadpurging', 'storage.maintenance.');
  checkKeys(purging, 'storage.maintenance.uploadpurging.', ['enabled', 'age', 'interval', 'dryrun'], warn);
  const redirect = section(storage, 'redirect', 'storage.');
  checkKeys(redirect, 'storage.redirect.', ['disable'], warn);
  const del = section(storage, 'delete', 'storage.');
  checkKeys(del, 'storage.delete.', ['enabled'], warn);
  const s3 = driver === 's3' ? section(storage, 's3', 'storage.') : undefined;

  const http = section(raw, 'http', '');
  checkKeys(http, 'http.', ['addr', 'host', 'secret', 'headers', 'tls'], warn, [
    'net', 'prefix', 'debug', 'http2', 'relativeurls', 'draintimeout', 'h2c',
  ]);
  const addr = str(http, 'addr', 'http.', ':5000');
  parseListenAddress(addr);
  const host = optString(http, 'host', 'http.');
  if (host !== undefined && !/^https?:\/\/[^/\s]+\/?$/.test(host)) {
    throw new ConfigError(`http.host: expected a base URL such as https://registry.example.com, got ${JSON.stringify(host)}`);
  }
  const headers: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(section(http, 'headers', 'http.'))) {
    headers[k] = Array.isArray(v) ? v.map(String) : [String(v)];
  }
  const tlsRaw = section(http, 'tls', 'http.');
  checkKeys(tlsRaw, 'http.tls.', ['certificate', 'key'], warn, ['clientcas', 'letsencrypt', 'minimumtls', 'ciphersuites']);
  const certificate = optString(tlsRaw, 'certificate', 'http.tls.');
  const key = optString(tlsRaw, 'key', 'http.tls.');
  if ((certificate === undefined) !== (key === undefined)) throw new ConfigError('http.tls: certificate and key go together');

  let redis: Config['redis'];
  const redisRaw = section(raw, 'redis', '');
  checkKeys(redisRaw, 'redis.', ['addr', 'username', 'password', 'db', 'keyprefix'], warn, [
    'dialtimeout', 'readtimeout', 'writetimeout', 'pool', 'tls',
  ]);
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
  }

  const berth = section(raw, 'berth', '');
  checkKeys(berth, 'berth.', ['automaticcrossmount', 'uploadsessionttl', 'shutdowntimeout', 'idletimeout', 'metrics', 'gc', 'index'], warn);

  const ui = section(raw, 'ui', '');
  checkKeys(ui, 'ui.', ['enabled'], warn);

  const config: Config = {
    log: { level: level as Config['log']['level'], formatter, accessLog, fields },
    storage: {
      driver,
      filesystem: { rootDirectory: str(fs, 'rootdirectory', 'storage.filesystem.', './data') },
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
      raw: berth,
    },
    ui: { enabled: bool(ui, 'enabled', 'ui.', true) },
    warnings,
  };
  if (s3) config.storage.s3 = s3;
  if (host !== undefined) config.http.host = host.replace(/\/$/, '');
  const secret = optString(http, 'secret', 'http.');
  if (secret !== undefined) config.http.secret = secret;
  if (certificate !== undefined && key !== undefined) config.http.tls = { certificate, key };
  if (redis) config.redis = redis;
  if (isSection(raw.auth) && Object.keys(raw.auth).length > 0) config.auth = raw.auth;
  if (isSection(raw.proxy) && Object.keys(raw.proxy).length > 0) config.proxy = raw.proxy;
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
      throw new ConfigError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
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
