import { bool, checkKeys, ConfigError, duration, int, optString, section, str, stringList, type RawSection } from '../config/fields.js';

/**
 * The `auth` section, typed. Distribution's providers keep their shape (`auth.htpasswd`, `auth.token`); berth's
 * built-in token server lives under `auth.builtin`, the failed-login limit under `auth.ratelimit`:
 *
 * ```yaml
 * auth:
 *   htpasswd: { realm: berth, path: /etc/berth/htpasswd }
 *   token:                       # verify Bearer tokens (external issuer, or berth's own)
 *     realm: https://registry.example.com/auth/token
 *     service: registry.example.com
 *     issuer: berth
 *     rootcertbundle: /etc/berth/issuer-certs.pem
 *     jwks: /etc/berth/jwks.json   # or https://issuer.example.com/.well-known/jwks.json
 *     autoredirect: false          # realm from the request's host + autoredirectpath
 *     signingalgorithms: [ES256, RS256]
 *   builtin:                     # berth's own token server on /auth/token
 *     users: /etc/berth/htpasswd   # default: auth.htpasswd.path
 *     rules: /etc/berth/rules.yaml # or an inline list
 *     groups: { admins: [alice] }
 *     key: /etc/berth/token-key.pem        # default: generated under the storage root
 *     certificate: /etc/berth/token-cert.pem
 *     expiration: 5m
 *     refreshexpiration: 720h
 *     service: registry.example.com  # default: auth.token.service, else "berth"
 *     issuer: berth                   # default: auth.token.issuer, else "berth"
 *   ratelimit: { failures: 10, window: 1m }
 * ```
 */
export interface AuthSettings {
  htpasswd?: { realm: string; path: string };
  token?: TokenSettings;
  builtin?: BuiltinSettings;
  rateLimit: { failures: number; windowMs: number };
}

/** JWS algorithms berth ever accepts: asymmetric only, never `none` or HMAC. */
export const SAFE_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA'] as const;

export interface TokenSettings {
  realm?: string;
  service: string;
  issuer: string;
  rootCertBundle?: string;
  jwks?: string;
  autoRedirect: boolean;
  autoRedirectPath: string;
  algorithms: string[];
}

export interface BuiltinSettings {
  users?: string;
  /** A rules file path, or the inline list. */
  rules?: string | unknown[];
  groups: Record<string, string[]>;
  key?: string;
  certificate?: string;
  expirationMs: number;
  refreshExpirationMs: number;
  service: string;
  issuer: string;
}

/** Parses `config.auth`; errors name the key, unknown keys go to `warn`. */
export function parseAuthSettings(raw: RawSection, warn: (msg: string) => void): AuthSettings {
  checkKeys(raw, 'auth.', ['htpasswd', 'token', 'builtin', 'ratelimit'], warn, ['silly']);
  const settings: AuthSettings = { rateLimit: { failures: 10, windowMs: 60_000 } };

  if (raw.htpasswd !== undefined && raw.htpasswd !== null) {
    const h = section(raw, 'htpasswd', 'auth.');
    checkKeys(h, 'auth.htpasswd.', ['realm', 'path'], warn);
    const path = optString(h, 'path', 'auth.htpasswd.');
    if (path === undefined) throw new ConfigError('auth.htpasswd.path: required');
    settings.htpasswd = { realm: str(h, 'realm', 'auth.htpasswd.', 'basic-realm'), path };
  }

  const t = raw.token !== undefined && raw.token !== null ? section(raw, 'token', 'auth.') : undefined;
  const b = raw.builtin !== undefined && raw.builtin !== null ? section(raw, 'builtin', 'auth.') : undefined;

  if (t) {
    const p = 'auth.token.';
    checkKeys(t, p, ['realm', 'service', 'issuer', 'rootcertbundle', 'jwks', 'autoredirect', 'autoredirectpath', 'signingalgorithms'], warn);
    const algorithms = stringList(t, 'signingalgorithms', p);
    for (const a of algorithms) {
      if (!(SAFE_ALGORITHMS as readonly string[]).includes(a)) {
        throw new ConfigError(`${p}signingalgorithms: ${JSON.stringify(a)} is not allowed; use ${SAFE_ALGORITHMS.join(', ')}`);
      }
    }
    const token: TokenSettings = {
      service: requireString(t, 'service', p, b !== undefined),
      issuer: requireString(t, 'issuer', p, b !== undefined),
      autoRedirect: bool(t, 'autoredirect', p, false),
      autoRedirectPath: str(t, 'autoredirectpath', p, '/auth/token'),
      algorithms: algorithms.length > 0 ? algorithms : [...SAFE_ALGORITHMS],
    };
    const realm = optString(t, 'realm', p);
    if (realm !== undefined) {
      if (!/^https?:\/\/\S+$/.test(realm)) throw new ConfigError(`${p}realm: expected an absolute http(s) URL, got ${JSON.stringify(realm)}`);
      token.realm = realm;
    } else if (!token.autoRedirect && b === undefined) {
      throw new ConfigError(`${p}realm: required (or set autoredirect: true, or configure auth.builtin)`);
    }
    const bundle = optString(t, 'rootcertbundle', p);
    if (bundle !== undefined) token.rootCertBundle = bundle;
    const jwks = optString(t, 'jwks', p);
    if (jwks !== undefined) token.jwks = jwks;
    if (bundle === undefined && jwks === undefined && b === undefined) {
      throw new ConfigError(`${p}rootcertbundle: required (or auth.token.jwks, or configure auth.builtin)`);
    }
    settings.token = token;
  }

  if (b) {
    const p = 'auth.builtin.';
    checkKeys(b, p, ['users', 'rules', 'groups', 'key', 'certificate', 'expiration', 'refreshexpiration', 'service', 'issuer'], warn);
    const rulesRaw = b.rules;
    let rules: string | unknown[] | undefined;
    if (rulesRaw === undefined || rulesRaw === null) rules = undefined;
    else if (typeof rulesRaw === 'string') rules = rulesRaw;
    else if (Array.isArray(rulesRaw)) rules = rulesRaw;
    else throw new ConfigError(`${p}rules: expected a file path or a list of rules, got ${JSON.stringify(rulesRaw)}`);
    const groups: Record<string, string[]> = {};
    const groupsRaw = section(b, 'groups', p);
    for (const name of Object.keys(groupsRaw)) groups[name] = stringList(groupsRaw, name, `${p}groups.`);
    const expirationMs = duration(b, 'expiration', p, 5 * 60_000);
    if (expirationMs < 60_000)
      throw new ConfigError(`${p}expiration: at least 60s (clients treat shorter tokens as 60s), got ${JSON.stringify(b.expiration)}`);
    const builtin: BuiltinSettings = {
      groups,
      expirationMs,
      refreshExpirationMs: duration(b, 'refreshexpiration', p, 30 * 86_400_000),
      service: optString(b, 'service', p) ?? settings.token?.service ?? 'berth',
      issuer: optString(b, 'issuer', p) ?? settings.token?.issuer ?? 'berth',
    };
    const users = optString(b, 'users', p) ?? settings.htpasswd?.path;
    if (users !== undefined) builtin.users = users;
    if (rules !== undefined) builtin.rules = rules;
    const key = optString(b, 'key', p);
    if (key !== undefined) builtin.key = key;
    const certificate = optString(b, 'certificate', p);
    if (certificate !== undefined) {
      if (key === undefined) throw new ConfigError(`${p}certificate: needs auth.builtin.key`);
      builtin.certificate = certificate;
    }
    settings.builtin = builtin;
    if (settings.token && settings.token.service !== builtin.service) {
      throw new ConfigError(`${p}service: must equal auth.token.service (${JSON.stringify(settings.token.service)}) so berth accepts its own tokens`);
    }
  }

  if (settings.htpasswd && settings.token && !settings.builtin) {
    throw new ConfigError("auth: configure one of htpasswd or token (with auth.builtin, htpasswd.path is the token server's user file)");
  }

  if (raw.ratelimit !== undefined && raw.ratelimit !== null) {
    const r = section(raw, 'ratelimit', 'auth.');
    checkKeys(r, 'auth.ratelimit.', ['failures', 'window'], warn);
    settings.rateLimit = {
      failures: int(r, 'failures', 'auth.ratelimit.', 10, 1),
      windowMs: duration(r, 'window', 'auth.ratelimit.', 60_000),
    };
  }
  return settings;
}

function requireString(obj: RawSection, key: string, path: string, optional: boolean): string {
  const v = optString(obj, key, path);
  if (v !== undefined) return v;
  if (optional) return 'berth';
  throw new ConfigError(`${path}${key}: required`);
}
