import { randomBytes } from 'node:crypto';
import { errors as joseErrors, jwtVerify } from 'jose';
import type { Logger } from 'pino';
import type { AuditLog } from '../events/audit.js';
import { TOKEN_ACTIONS, type AccessRecord, type Action } from './access.js';
import { quote } from './basic.js';
import { entryFingerprint, type HtpasswdStore } from './htpasswd.js';
import type { FailureLimiter } from './rate-limit.js';
import { grant, type RulesSource } from './rules.js';
import type { TokenSigner } from './signer.js';
import { RegistryError } from '../errors/registry-error.js';
import { isValidName } from '../oci/reference.js';

/**
 * Parses Docker token scopes (`repository:samalba/my-app:pull,push`, `registry:catalog:*`), from repeated `scope`
 * parameters and/or space-separated lists (OAuth2 form). The name sits between the first and the last `:`; a
 * resource class (`repository(plugin)`) is dropped; unknown types, invalid names and unknown actions are ignored.
 * Repeated resources are merged.
 */
export function parseScopes(values: string[]): AccessRecord[] {
  const merged = new Map<string, AccessRecord>();
  for (const value of values) {
    for (const scope of value.split(/\s+/)) {
      const first = scope.indexOf(':');
      const last = scope.lastIndexOf(':');
      if (first <= 0 || last === first) continue;
      const type = scope.slice(0, first).replace(/\([^)]*\)$/, '');
      const name = scope.slice(first + 1, last);
      const actions = scope
        .slice(last + 1)
        .split(',')
        .filter((a): a is Action => TOKEN_ACTIONS.includes(a));
      let kind: AccessRecord['type'];
      if (type === 'repository' && isValidName(name)) kind = 'repository';
      else if (type === 'registry' && name === 'catalog') kind = 'registry';
      else continue;
      const key = `${kind}:${name}`;
      const record: AccessRecord = merged.get(key) ?? { type: kind, name, actions: [] };
      for (const a of actions) if (!record.actions.includes(a)) record.actions.push(a);
      merged.set(key, record);
    }
  }
  return [...merged.values()];
}

export interface TokenServerOptions {
  users: HtpasswdStore | undefined;
  rules: RulesSource;
  signer: TokenSigner;
  limiter: FailureLimiter;
  service: string;
  issuer: string;
  expirationMs: number;
  refreshExpirationMs: number;
  logger?: Logger;
  /** The audit trail: token grants and failed logins. */
  audit?: AuditLog;
}

/** The token endpoint's JSON answer (Docker token spec and its OAuth2 variant). */
export interface TokenResponse {
  token: string;
  access_token: string;
  expires_in: number;
  issued_at: string;
  refresh_token?: string;
}

/**
 * berth's token issuer: authenticates users against the htpasswd store, grants the intersection of the requested
 * and the allowed access, signs tokens and refresh tokens.
 */
export class TokenIssuer {
  constructor(private readonly options: TokenServerOptions) {}

  get service(): string {
    return this.options.service;
  }

  /** Refresh tokens are JWTs for a different audience, so the registry never takes one as an access token. */
  private get refreshAudience(): string {
    return `berth-refresh:${this.options.service}`;
  }

  /** Checks a password (rate-limited per `ip` and per account); resolves the account or throws UNAUTHORIZED / TOOMANYREQUESTS. */
  async login(ip: string, name: string, password: string, requestId?: string): Promise<string> {
    const attempt = await this.options.limiter.begin(ip, name);
    let ok = false;
    try {
      ok = this.options.users ? await this.options.users.verify(name, password) : false;
    } finally {
      if (ok) attempt.succeeded();
      else attempt.failed();
    }
    if (!ok) {
      this.options.logger?.info({ account: name, ip }, 'token server: login failed');
      this.options.audit?.record('login failure', { user: name, addr: ip, requestId }, { via: 'token' });
      throw new RegistryError('UNAUTHORIZED', undefined, {
        message: 'invalid username or password',
        headers: { 'WWW-Authenticate': `Basic realm=${quote(this.options.service)}` },
      });
    }
    return name;
  }

  /** Resolves the account of a valid refresh token (rate-limited like a password); the user must still exist unchanged. */
  async redeem(ip: string, refreshToken: string, requestId?: string): Promise<string> {
    const attempt = await this.options.limiter.begin(ip);
    let sub: unknown;
    try {
      sub = await this.verifyRefresh(refreshToken);
    } finally {
      if (typeof sub === 'string') attempt.succeeded();
      else attempt.failed();
    }
    if (typeof sub !== 'string') {
      this.options.audit?.record('login failure', { addr: ip, requestId }, { via: 'refresh_token' });
      throw new RegistryError('UNAUTHORIZED', undefined, { message: 'invalid refresh token' });
    }
    return sub;
  }

  /** The account of a valid refresh token whose user still exists unchanged, else undefined. */
  private async verifyRefresh(refreshToken: string): Promise<string | undefined> {
    let sub: unknown;
    let fingerprint: unknown;
    try {
      const { payload } = await jwtVerify(refreshToken, this.options.signer.publicKey, {
        algorithms: [this.options.signer.alg],
        issuer: this.options.issuer,
        audience: this.refreshAudience,
        requiredClaims: ['exp', 'sub'],
      });
      sub = payload.sub;
      fingerprint = payload.pwd;
    } catch (err) {
      if (err instanceof joseErrors.JOSEError || err instanceof TypeError) return undefined;
      throw err;
    }
    const hash = typeof sub === 'string' ? await this.options.users?.hashOf(sub) : undefined;
    if (typeof sub !== 'string' || hash === undefined || entryFingerprint(hash) !== fingerprint) return undefined;
    return sub;
  }

  /** Issues an access token for `account` (undefined: anonymous), plus a refresh token when `offline`. */
  async issue(
    account: string | undefined,
    requested: AccessRecord[],
    offline: boolean,
    who: { ip?: string; requestId?: string } = {},
  ): Promise<TokenResponse> {
    const rules = await this.options.rules.rules();
    const access = grant(rules, account, requested);
    // `registry:catalog:search` (what `docker search` asks for) is granted to everyone: search results only ever
    // hold repositories the rules let the caller pull, so the scope itself reveals nothing.
    const search = requested.find((r) => r.type === 'registry' && r.name === 'catalog' && r.actions.includes('search'));
    if (search) {
      const held = access.find((r) => r.type === 'registry' && r.name === 'catalog');
      if (!held) access.push({ type: 'registry', name: 'catalog', actions: ['search'] });
      else if (!held.actions.includes('search') && !held.actions.includes('*')) held.actions.push('search');
    }
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = Math.floor(this.options.expirationMs / 1000);
    const token = await this.options.signer.sign({
      iss: this.options.issuer,
      sub: account ?? '',
      aud: this.options.service,
      exp: now + expiresIn,
      nbf: now,
      iat: now,
      jti: randomBytes(16).toString('base64url'),
      access,
    });
    const response: TokenResponse = { token, access_token: token, expires_in: expiresIn, issued_at: new Date(now * 1000).toISOString() };
    if (offline && account !== undefined) {
      const hash = await this.options.users?.hashOf(account);
      if (hash !== undefined) {
        response.refresh_token = await this.options.signer.sign({
          iss: this.options.issuer,
          sub: account,
          aud: this.refreshAudience,
          exp: now + Math.floor(this.options.refreshExpirationMs / 1000),
          iat: now,
          jti: randomBytes(16).toString('base64url'),
          pwd: entryFingerprint(hash),
        });
      }
    }
    this.options.logger?.debug({ account: account ?? '(anonymous)', access }, 'token issued');
    this.options.audit?.record(
      'token grant',
      { user: account, addr: who.ip, requestId: who.requestId },
      {
        access: access.map((a) => `${a.type}:${a.name}:${a.actions.join(',')}`),
        ...(response.refresh_token ? { refreshToken: true } : {}),
      },
    );
    return response;
  }
}
