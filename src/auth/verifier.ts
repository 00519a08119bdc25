import { decodeProtectedHeader, errors as joseErrors, jwtVerify } from 'jose';
import { TOKEN_ACTIONS, type AccessRecord, type Action } from './access.js';
import type { TrustStore } from './trust.js';

/** Why a token was refused (kept for debug logs; never contains the token). */
export class InvalidTokenError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'InvalidTokenError';
  }
}

/** A verified token's subject and granted access. */
export interface VerifiedToken {
  subject?: string;
  access: AccessRecord[];
}

export interface VerifierOptions {
  /** Accepted `iss` values. */
  issuers: string[];
  /** The `aud` a token must name (the service). */
  audience: string;
  /** Allowed JWS algorithms (never `none`, never HMAC: see SAFE_ALGORITHMS). */
  algorithms: string[];
  /** Clock skew allowed on `exp`/`nbf`, seconds. */
  leewaySeconds?: number;
}

/** The `access` claim: `[{type, name, actions}]`; unknown types and actions are dropped, a malformed claim refused. */
export function parseAccessClaim(claim: unknown): AccessRecord[] {
  if (claim === undefined || claim === null) return [];
  if (!Array.isArray(claim)) throw new InvalidTokenError('access claim is not a list');
  const out: AccessRecord[] = [];
  for (const entry of claim) {
    if (typeof entry !== 'object' || entry === null) throw new InvalidTokenError('access claim entry is not an object');
    const { type, name, actions } = entry as Record<string, unknown>;
    if (typeof type !== 'string' || typeof name !== 'string' || !Array.isArray(actions)) {
      throw new InvalidTokenError('access claim entry needs type, name and actions');
    }
    if (type !== 'repository' && type !== 'registry') continue;
    const acts = actions.filter((a): a is Action => typeof a === 'string' && TOKEN_ACTIONS.includes(a));
    out.push({ type, name, actions: acts });
  }
  return out;
}

/** True when `granted` covers every action of every record in `required` (`*` covers any action). */
export function covers(granted: AccessRecord[], required: AccessRecord[]): boolean {
  return required.every((r) => {
    const have = new Set<string>();
    for (const g of granted) if (g.type === r.type && g.name === r.name) for (const a of g.actions) have.add(a);
    return r.actions.every((a) => have.has(a) || have.has('*'));
  });
}

/**
 * Verifies Docker registry Bearer tokens (JWS compact JWTs): the algorithm must be on the allow-list, the key one
 * the {@link TrustStore} trusts for this header, `iss` one of the issuers, `aud` the service, `exp` in the future and
 * `nbf` in the past (both with a small leeway), and the `access` claim well-formed.
 */
export class TokenVerifier {
  private readonly leeway: number;

  constructor(
    private readonly trust: TrustStore,
    private readonly options: VerifierOptions,
  ) {
    this.leeway = options.leewaySeconds ?? 30;
  }

  async verify(token: string): Promise<VerifiedToken> {
    if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token)) throw new InvalidTokenError('malformed token');
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new InvalidTokenError('malformed header');
    }
    const alg = header.alg;
    // RFC 8725 §3.1: algorithm verification against an explicit allow-list; `none` and HMAC are never on it.
    if (typeof alg !== 'string' || !this.options.algorithms.includes(alg)) throw new InvalidTokenError(`algorithm ${String(alg)} not allowed`);
    const keys = await this.trust.candidates(header);
    if (keys.length === 0) throw new InvalidTokenError('signing key not trusted');
    let lastError: unknown;
    for (const key of keys) {
      try {
        const { payload } = await jwtVerify(token, key, {
          algorithms: [alg],
          issuer: this.options.issuers,
          audience: this.options.audience,
          // RFC 7519 §4.1.4/§4.1.5: "Implementers MAY provide for some small leeway ... to account for clock skew."
          clockTolerance: this.leeway,
          requiredClaims: ['exp'],
        });
        const result: VerifiedToken = { access: parseAccessClaim(payload.access) };
        if (typeof payload.sub === 'string' && payload.sub !== '') result.subject = payload.sub;
        return result;
      } catch (err) {
        // A claim failure means the signature was good: no other key changes the outcome.
        if (err instanceof joseErrors.JWTClaimValidationFailed || err instanceof joseErrors.JWTExpired || err instanceof InvalidTokenError) {
          throw new InvalidTokenError(err.message);
        }
        lastError = err;
      }
    }
    throw new InvalidTokenError(lastError instanceof Error ? `signature: ${lastError.message}` : 'signature invalid');
  }
}
