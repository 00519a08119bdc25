import type { IncomingHttpHeaders } from 'node:http';
import type { Logger } from 'pino';
import { scopeString, type AccessRecord } from './access.js';
import type { AuthRequest, Authorizer, Principal } from './authorizer.js';
import { quote } from './basic.js';
import { allowedActions, type RulesSource } from './rules.js';
import { covers, InvalidTokenError, type TokenVerifier } from './verifier.js';
import { RegistryError } from '../errors/registry-error.js';

/** The token realm: a fixed URL, or one built from the request (autoredirect, or berth's own token server). */
export type RealmResolver = (headers: IncomingHttpHeaders) => string;

/** `<proto>://<host><path>` from the request's Host (or X-Forwarded-Host/Proto, as set by a reverse proxy). */
export function realmFromRequest(path: string, defaultProto: 'http' | 'https'): RealmResolver {
  return (headers) => {
    const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v)?.split(',')[0]?.trim();
    const proto = first(headers['x-forwarded-proto']) ?? defaultProto;
    const host = first(headers['x-forwarded-host']) ?? first(headers.host) ?? 'localhost';
    return `${proto === 'https' ? 'https' : 'http'}://${host}${path}`;
  };
}

/**
 * `auth.token`: Bearer JWTs issued by a Docker token server (berth's own or external). A request without a valid
 * token, or whose token lacks an action, gets 401 with
 * `WWW-Authenticate: Bearer realm="...",service="...",scope="repository:<name>:pull,push"`
 * (token spec: `error="insufficient_scope"` when the token is valid but does not grant the access, `invalid_token`
 * when it is not valid). The `base` route (no access records) needs any valid token.
 */
export class TokenAuthorizer implements Authorizer {
  readonly name = 'token';
  readonly anonymousListing: boolean;

  /**
   * @param rules the built-in token server's access rules, when it runs: listings are then filtered by what the
   *   rules let the token's subject pull. Without them (only an external issuer), by what the token grants: pull on
   *   the repository, or `registry:catalog:*` (the issuer granted the whole catalog).
   */
  constructor(
    private readonly verifier: TokenVerifier,
    private readonly realm: RealmResolver,
    private readonly service: string,
    private readonly logger?: Logger,
    private readonly rules?: RulesSource,
  ) {
    this.anonymousListing = rules !== undefined;
  }

  async canPull(principal: Principal, repo: string): Promise<boolean> {
    if (this.rules) {
      const allowed = allowedActions(await this.rules.rules(), principal.account, 'repository', repo);
      return allowed.has('pull') || allowed.has('*');
    }
    const granted = principal.granted ?? [];
    return (
      covers(granted, [{ type: 'repository', name: repo, actions: ['pull'] }]) ||
      covers(granted, [{ type: 'registry', name: 'catalog', actions: ['*'] }])
    );
  }

  /** With the built-in rules: what they allow the account (or anonymous); otherwise what its token granted. */
  async permits(principal: Principal, access: AccessRecord[]): Promise<boolean> {
    if (this.rules) {
      const set = await this.rules.rules();
      return access.every((r) => {
        const allowed = allowedActions(set, principal.account, r.type, r.name);
        return allowed.has('*') || r.actions.every((a) => allowed.has(a));
      });
    }
    return covers(principal.granted ?? [], access);
  }

  /** The `WWW-Authenticate` challenge for `access`. */
  challenge(headers: IncomingHttpHeaders, access: AccessRecord[], error?: string): string {
    let value = `Bearer realm=${quote(this.realm(headers))},service=${quote(this.service)}`;
    if (access.length > 0) value += `,scope=${quote(scopeString(access))}`;
    if (error) value += `,error=${quote(error)}`;
    return value;
  }

  async authorize(request: AuthRequest, access: AccessRecord[]): Promise<Principal> {
    const fail = (error: string | undefined, message?: string): RegistryError =>
      new RegistryError('UNAUTHORIZED', access.length > 0 ? access : undefined, {
        headers: { 'WWW-Authenticate': this.challenge(request.headers, access, error) },
        ...(message ? { message } : {}),
      });
    const header = request.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!m) throw fail(undefined);
    let verified;
    try {
      verified = await this.verifier.verify(m[1] ?? '');
    } catch (err) {
      if (!(err instanceof InvalidTokenError)) throw err;
      this.logger?.debug({ reason: err.message }, 'bearer token refused');
      // RFC 6750 §3.1 invalid_token: "The access token provided is expired, revoked, malformed, or invalid for other
      // reasons."
      throw fail('invalid_token', 'invalid token');
    }
    // RFC 6750 §3.1 insufficient_scope: "The request requires higher privileges than provided by the access token."
    if (!covers(verified.access, access)) throw fail('insufficient_scope', 'insufficient scope');
    const principal: Principal = { granted: verified.access };
    if (verified.subject) principal.account = verified.subject;
    return principal;
  }

  async close(): Promise<void> {}
}
