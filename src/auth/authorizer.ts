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
  /**
   * Whether `principal` may pull `repo`: filters `_catalog`, search and the JSON API's lists, so a caller never sees
   * the name of a repository they may not pull.
   */
  canPull(principal: Principal, repo: string): Promise<boolean>;
  /**
   * Whether `principal` holds every record of `access` without a request (the web UI's session principals: which
   * delete controls and pages it may show). Same answer `authorize` would give a request of that principal.
   */
  permits(principal: Principal, access: AccessRecord[]): Promise<boolean>;
  /**
   * True when a request without credentials may be answered as anonymous by filtered listings (search, the API's
   * repository list) instead of a 401: the authorizer has rules that can grant anonymous clients something.
   */
  readonly anonymousListing: boolean;
  close(): Promise<void>;
}

/** No authentication: everything is allowed (registry:2 without an `auth` section). */
export class AllowAllAuthorizer implements Authorizer {
  readonly name = 'none';
  readonly anonymousListing = true;
  async authorize(): Promise<Principal> {
    return {};
  }
  async canPull(): Promise<boolean> {
    return true;
  }
  async permits(): Promise<boolean> {
    return true;
  }
  async close(): Promise<void> {}
}
