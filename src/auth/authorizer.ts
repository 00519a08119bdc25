import type { IncomingHttpHeaders } from 'node:http';
import type { AccessRecord } from './access.js';

/** Who made a request, once authenticated. */
export interface Principal {
  /** Account name; absent for anonymous requests. */
  account?: string;
  /** Actions granted per `type:name`, as far as the authorizer knows them. */
  granted?: AccessRecord[];
}

export interface AuthRequest {
  method: string;
  headers: IncomingHttpHeaders;
  /** Client address (for rate limiting). */
  ip: string;
  /** The request id, for the audit trail. */
  id?: string;
}

/**
 * The authorizer seam: `none`, `htpasswd` (Basic), `token` (Bearer JWTs from a built-in or external issuer).
 *
 * `authorize` resolves with the principal when the request may have every record in `access`, and otherwise
 * throws a RegistryError: UNAUTHORIZED (401, with the `WWW-Authenticate` challenge in its headers) when the
 * credentials are missing, invalid or lack an action (token: `error="insufficient_scope"`), DENIED (403) when an
 * authenticated account may never have it, TOOMANYREQUESTS after repeated failures.
 */
export interface Authorizer {
  readonly name: string;
  authorize(request: AuthRequest, access: AccessRecord[]): Promise<Principal>;
  close(): Promise<void>;
}

/** No authentication: everything is allowed (registry:2 without an `auth` section). */
export class AllowAllAuthorizer implements Authorizer {
  readonly name = 'none';
  async authorize(): Promise<Principal> {
    return {};
  }
  async close(): Promise<void> {}
}
