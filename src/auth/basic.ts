import type { AuditLog } from '../events/audit.js';
import type { AccessRecord } from './access.js';
import type { AuthRequest, Authorizer, Principal } from './authorizer.js';
import type { HtpasswdStore } from './htpasswd.js';
import type { FailureLimiter } from './rate-limit.js';
import { RegistryError } from '../errors/registry-error.js';

/** Decodes `Authorization: Basic base64(name:password)`; undefined when absent or malformed. */
export function parseBasic(header: string | undefined): { name: string; password: string } | undefined {
  if (!header) return undefined;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return undefined;
  const decoded = Buffer.from(m[1] ?? '', 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { name: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Quotes a value for an auth-param (RFC 7235 quoted-string). */
export function quote(value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`;
}

/**
 * `auth.htpasswd`: HTTP Basic against an htpasswd file. As in Distribution, any valid user may do everything;
 * missing or wrong credentials get 401 with `WWW-Authenticate: Basic realm="..."`. Wrong passwords count towards the
 * failed-login limit of the address and of the account; right ones (every authenticated API call) clear nothing.
 */
export class BasicAuthorizer implements Authorizer {
  readonly name = 'htpasswd';
  readonly anonymousListing = false;

  constructor(
    private readonly users: HtpasswdStore,
    private readonly realm: string,
    private readonly limiter: FailureLimiter,
    /** The audit trail: failed logins. */
    private readonly audit?: AuditLog,
  ) {}

  async authorize(request: AuthRequest, access: AccessRecord[]): Promise<Principal> {
    const header = request.headers.authorization;
    const creds = parseBasic(typeof header === 'string' ? header : undefined);
    const challenge = { headers: { 'WWW-Authenticate': `Basic realm=${quote(this.realm)}` } };
    const detail = access.length > 0 ? access : undefined;
    if (!creds) throw new RegistryError('UNAUTHORIZED', detail, challenge);
    const attempt = await this.limiter.begin(request.ip, creds.name);
    let ok = false;
    try {
      ok = await this.users.verify(creds.name, creds.password);
    } finally {
      if (ok) attempt.succeeded();
      else attempt.failed();
    }
    if (!ok) {
      this.audit?.record('login failure', { user: creds.name, addr: request.ip, requestId: request.id }, { via: 'basic' });
      throw new RegistryError('UNAUTHORIZED', detail, { ...challenge, message: 'invalid username or password' });
    }
    return { account: creds.name };
  }

  /** As in Distribution, a valid user may pull everything; anonymous clients nothing. */
  async canPull(principal: Principal): Promise<boolean> {
    return principal.account !== undefined;
  }

  /** As in Distribution, a valid user may do everything; anonymous clients nothing. */
  async permits(principal: Principal): Promise<boolean> {
    return principal.account !== undefined;
  }

  async close(): Promise<void> {}
}
