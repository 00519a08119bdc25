import { globToRegExp } from '../oci/name-glob.js';
import { bool, checkKeys, ConfigError, duration, isSection, optString, stringList, type RawSection } from '../config/fields.js';

/**
 * The `proxy` section, typed. Distribution's single-upstream form loads as is:
 *
 * ```yaml
 * proxy:
 *   remoteurl: https://registry-1.docker.io
 *   username: alice          # optional upstream credentials
 *   password: secret
 *   ttl: 168h                # cached content not pulled for this long is removed (0: never)
 * ```
 *
 * berth's form lists several upstreams; each one is selected by containerd's `?ns=<name>` (or an alias), by the
 * local path prefix `/v2/<name>/<repo>` and, for the default upstream, by plain names:
 *
 * ```yaml
 * proxy:
 *   upstreams:
 *     - name: docker.io                     # the registry host it mirrors (what containerd sends as ?ns=)
 *       url: https://registry-1.docker.io
 *       username: alice
 *       password: secret
 *       ttl: 168h                           # expiry of cached content not pulled for this long (0: never)
 *       tagttl: 5m                          # a cached tag is served without asking upstream for this long
 *       repositories: ["library/*", "bitnami/**"]   # names this upstream serves (default: all)
 *       default: true                       # plain names (no ?ns=) go here; default: the docker.io upstream
 *       timeout: 30s                        # connect/headers and idle-body timeout for upstream requests
 *       aliases: [index.docker.io]          # more registry hosts it serves (?ns= values selecting it); a regional
                                           # Docker Hub mirror lists docker.io here
 *     - name: ghcr.io
 *       url: https://ghcr.io
 *   expiryinterval: 1h                      # how often cached content past its ttl is looked for
 * ```
 */
export interface ProxySettings {
  upstreams: UpstreamSettings[];
  /** The upstream serving plain names (no `?ns=`, no upstream prefix), if any. */
  defaultUpstream?: UpstreamSettings;
  expiryIntervalMs: number;
  /**
   * Distribution's single-upstream form (`proxy.remoteurl`, no `upstreams` list): like registry:2, berth then
   * ignores containerd's `?ns=`, so every `ns` (docker.io for a chained Docker Hub mirror, or any other) maps to the
   * one upstream and is answered exactly as the plain request of a Docker daemon.
   */
  singleUpstream: boolean;
}

/** One upstream registry, typed (from `proxy.upstreams[i]`, or from Distribution's single-upstream keys). */
export interface UpstreamSettings {
  /** Registry host it mirrors, e.g. `docker.io`. */
  name: string;
  /** Base URL, without a trailing slash. */
  url: string;
  username?: string;
  password?: string;
  /** Cached content not pulled for this long is removed; 0 keeps it forever. */
  ttlMs: number;
  /** A cached tag younger than this is served without revalidation. */
  tagTtlMs: number;
  /** Repository globs (`*` within a component, `**` across) this upstream serves. */
  repositories: string[];
  /** Local name prefix of this upstream's cached repositories (non-default upstreams). */
  prefix: string;
  isDefault: boolean;
  /**
   * Docker Hub or a mirror of it (its name or one of its `aliases` is docker.io): a one-component name means
   * `library/<name>` upstream.
   */
  dockerHub: boolean;
  /** Values of `?ns=` that select this upstream (its name first). */
  aliases: string[];
  timeoutMs: number;
}

const DOCKER_HUB_HOSTS = ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com'];
const DEFAULT_TTL_MS = 168 * 3_600_000;
const DEFAULT_TAG_TTL_MS = 5 * 60_000;
const DEFAULT_TIMEOUT_MS = 30_000;
const UPSTREAM_KEYS = ['name', 'url', 'username', 'password', 'ttl', 'tagttl', 'repositories', 'default', 'timeout', 'aliases'];

/** The name an upstream URL gets in Distribution's form: docker.io for Docker Hub, else the URL's host. */
export function upstreamNameFor(url: URL): string {
  return DOCKER_HUB_HOSTS.includes(url.hostname) ? 'docker.io' : url.host;
}

/** Whether `name` is a repository name this upstream serves. */
export function servesRepository(u: UpstreamSettings, name: string): boolean {
  return u.repositories.some((g) => globToRegExp(g).test(name));
}

function parseUrl(raw: string, path: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${path}: expected an http(s) URL, got ${JSON.stringify(raw)}`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password || url.search || url.hash) {
    throw new ConfigError(`${path}: expected an http(s) URL without credentials, query or fragment, got ${JSON.stringify(raw)}`);
  }
  return url;
}

/** A repository name component made of the upstream's host (`localhost:5000` → `localhost-5000`). */
function prefixFor(name: string, path: string): string {
  const prefix = name.toLowerCase().replace(/:/g, '-');
  if (!/^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/.test(prefix)) {
    throw new ConfigError(`${path}: expected a registry host such as docker.io or ghcr.io, got ${JSON.stringify(name)}`);
  }
  return prefix;
}

function parseUpstream(
  raw: RawSection,
  path: string,
  warn: (msg: string) => void,
  fallbackName?: string,
): UpstreamSettings & { explicitDefault: boolean } {
  const urlRaw = optString(raw, 'url', path) ?? optString(raw, 'remoteurl', path);
  if (urlRaw === undefined) throw new ConfigError(`${path}url: required`);
  const url = parseUrl(urlRaw, `${path}url`);
  const name = (optString(raw, 'name', path) ?? fallbackName ?? upstreamNameFor(url)).toLowerCase();
  const prefix = prefixFor(name, `${path}name`);
  const username = optString(raw, 'username', path);
  const password = optString(raw, 'password', path);
  if ((username === undefined) !== (password === undefined)) throw new ConfigError(`${path}username: username and password go together`);
  const repositories = stringList(raw, 'repositories', path);
  for (const g of repositories) {
    if (!/^[a-z0-9*][a-z0-9._/*-]*$/.test(g)) throw new ConfigError(`${path}repositories: ${JSON.stringify(g)} is not a repository glob`);
  }
  const aliases = [name, ...stringList(raw, 'aliases', path).map((a) => a.toLowerCase())];
  // A regional Docker Hub mirror listed with `aliases: [docker.io]` serves Docker Hub's names (library/...).
  const dockerHub = aliases.includes('docker.io');
  if (dockerHub) for (const h of DOCKER_HUB_HOSTS) if (!aliases.includes(h)) aliases.push(h);
  if (url.host !== name && !aliases.includes(url.host)) aliases.push(url.host);
  const timeoutMs = duration(raw, 'timeout', path, DEFAULT_TIMEOUT_MS);
  if (timeoutMs <= 0) throw new ConfigError(`${path}timeout: must be positive`);
  const settings: UpstreamSettings & { explicitDefault: boolean } = {
    name,
    url: url.toString().replace(/\/+$/, ''),
    ttlMs: duration(raw, 'ttl', path, DEFAULT_TTL_MS),
    tagTtlMs: duration(raw, 'tagttl', path, DEFAULT_TAG_TTL_MS),
    repositories: repositories.length > 0 ? repositories : ['**'],
    prefix,
    isDefault: false,
    explicitDefault: bool(raw, 'default', path, false),
    dockerHub,
    aliases,
    timeoutMs,
  };
  if (username !== undefined && password !== undefined) {
    settings.username = username;
    settings.password = password;
  }
  if (url.protocol === 'http:' && settings.username !== undefined && !/^(127\.|localhost$|\[::1\]$)/.test(url.hostname)) {
    warn(`${path}url: credentials are sent over plain http`);
  }
  return settings;
}

/**
 * Parses `config.proxy` (Distribution's form or berth's `upstreams` list); errors name the key, unknown keys go to
 * `warn`. Returns null when the section configures no upstream.
 */
export function parseProxySettings(raw: RawSection, warn: (msg: string) => void): ProxySettings | null {
  checkKeys(
    raw,
    'proxy.',
    ['remoteurl', 'username', 'password', 'ttl', 'tagttl', 'timeout', 'repositories', 'upstreams', 'expiryinterval', 'spooldirectory'],
    warn,
  );
  const parsed: Array<UpstreamSettings & { explicitDefault: boolean }> = [];
  if (raw.remoteurl !== undefined && raw.remoteurl !== null && raw.remoteurl !== '') {
    const single = parseUpstream(raw, 'proxy.', warn);
    single.explicitDefault = true;
    parsed.push(single);
  }
  const list = raw.upstreams;
  if (list !== undefined && list !== null) {
    if (!Array.isArray(list)) throw new ConfigError(`proxy.upstreams: expected a list of upstreams, got ${JSON.stringify(list)}`);
    list.forEach((entry, i) => {
      const p = `proxy.upstreams[${i}].`;
      if (!isSection(entry)) throw new ConfigError(`${p.slice(0, -1)}: expected a mapping`);
      checkKeys(entry, p, UPSTREAM_KEYS, warn);
      if (optString(entry, 'name', p) === undefined) throw new ConfigError(`${p}name: required (the registry host it mirrors, e.g. docker.io)`);
      parsed.push(parseUpstream(entry, p, warn));
    });
  }
  if (parsed.length === 0) return null;
  const seen = new Map<string, string>();
  for (const u of parsed) {
    for (const key of [...u.aliases, `prefix:${u.prefix}`]) {
      const other = seen.get(key);
      if (other !== undefined && other !== u.name)
        throw new ConfigError(`proxy.upstreams: ${u.name} and ${other} both claim ${key.replace(/^prefix:/, '')}`);
      seen.set(key, u.name);
    }
    if (seen.get(`name:${u.name}`) !== undefined) throw new ConfigError(`proxy.upstreams: ${u.name} is listed twice`);
    seen.set(`name:${u.name}`, u.name);
  }
  const explicit = parsed.filter((u) => u.explicitDefault);
  if (explicit.length > 1) throw new ConfigError(`proxy.upstreams: only one upstream can be the default (${explicit.map((u) => u.name).join(', ')})`);
  const chosen = explicit[0] ?? parsed.find((u) => u.dockerHub) ?? (parsed.length === 1 ? parsed[0] : undefined);
  const upstreams: UpstreamSettings[] = parsed.map(({ explicitDefault: _e, ...u }, i) => ({ ...u, isDefault: parsed[i] === chosen }));
  const settings: ProxySettings = {
    upstreams,
    expiryIntervalMs: duration(raw, 'expiryinterval', 'proxy.', 3_600_000),
    singleUpstream: parsed.length === 1 && (list === undefined || list === null),
  };
  const def = upstreams.find((u) => u.isDefault);
  if (def) settings.defaultUpstream = def;
  return settings;
}
