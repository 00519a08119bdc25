/**
 * The one registry of the domain's error kinds, at the bottom of the layers (it imports nothing).
 *
 * Every error a client can see is described here once, with the distribution error code it is reported as and
 * the default message of the distribution spec -- but no HTTP status: `http/error-status.ts` holds the one table
 * from kind to status, and `http/error-handler.ts` is the only place that turns a {@link RegistryError} into the
 * `{"errors":[{code,message,detail}]}` body. Services and stores throw them without knowing about HTTP.
 */

export interface ErrorDescriptor {
  /** The `code` clients see (several kinds share one, e.g. MANIFEST_TOO_BIG is reported as MANIFEST_INVALID). */
  readonly code: string;
  readonly message: string;
}

function descriptor(code: string, message: string): ErrorDescriptor {
  return Object.freeze({ code, message });
}

export const ErrorCodes = Object.freeze({
  BLOB_UNKNOWN: descriptor('BLOB_UNKNOWN', 'blob unknown to registry'),
  BLOB_UPLOAD_INVALID: descriptor('BLOB_UPLOAD_INVALID', 'blob upload invalid'),
  BLOB_UPLOAD_BUSY: descriptor('BLOB_UPLOAD_INVALID', 'another request is writing to this upload'),
  BLOB_UPLOAD_UNKNOWN: descriptor('BLOB_UPLOAD_UNKNOWN', 'blob upload unknown to registry'),
  DIGEST_INVALID: descriptor('DIGEST_INVALID', 'provided digest did not match uploaded content'),
  MANIFEST_BLOB_UNKNOWN: descriptor('MANIFEST_BLOB_UNKNOWN', 'manifest references a manifest or blob unknown to registry'),
  MANIFEST_INVALID: descriptor('MANIFEST_INVALID', 'manifest invalid'),
  MANIFEST_UNKNOWN: descriptor('MANIFEST_UNKNOWN', 'manifest unknown to registry'),
  NAME_INVALID: descriptor('NAME_INVALID', 'invalid repository name'),
  NAME_UNKNOWN: descriptor('NAME_UNKNOWN', 'repository name not known to registry'),
  SIZE_INVALID: descriptor('SIZE_INVALID', 'provided length did not match content length'),
  TAG_INVALID: descriptor('TAG_INVALID', 'manifest tag did not match URI'),
  PAGINATION_NUMBER_INVALID: descriptor('PAGINATION_NUMBER_INVALID', 'invalid number of results requested'),
  RANGE_INVALID: descriptor('RANGE_INVALID', 'invalid content range'),
  MANIFEST_TOO_BIG: descriptor('MANIFEST_INVALID', 'manifest too big'),
  UNAUTHORIZED: descriptor('UNAUTHORIZED', 'authentication required'),
  DENIED: descriptor('DENIED', 'requested access to the resource is denied'),
  UNSUPPORTED: descriptor('UNSUPPORTED', 'the operation is unsupported'),
  TOOMANYREQUESTS: descriptor('TOOMANYREQUESTS', 'too many requests'),
  UNAVAILABLE: descriptor('UNAVAILABLE', 'service unavailable'),
  UNKNOWN: descriptor('UNKNOWN', 'unknown error'),
  NOT_FOUND: descriptor('NOT_FOUND', 'not found'),
  /** A request the HTTP layer could not read (a body that does not parse): not the client's choice of method. */
  BAD_REQUEST: descriptor('BAD_REQUEST', 'malformed request'),
  /** A request body larger than the endpoint accepts. */
  REQUEST_TOO_BIG: descriptor('SIZE_INVALID', 'request body too large'),
  /** A request body of a media type the endpoint does not read. */
  MEDIA_TYPE_UNSUPPORTED: descriptor('UNSUPPORTED', 'unsupported media type'),
  /** A request not complete within the server's request timeout (refused by the HTTP parser). */
  REQUEST_TIMEOUT: descriptor('UNAVAILABLE', 'request timed out'),
  /** Request headers larger than the HTTP parser accepts. */
  HEADERS_TOO_LARGE: descriptor('UNSUPPORTED', 'request headers too large'),
  /**
   * The storage cannot take more data: the disk is full (ENOSPC, EDQUOT) or mounted read-only (EROFS). Distribution
   * has no code for it; berth answers 507 Insufficient Storage with code UNAVAILABLE and a message naming the cause,
   * so clients that retry on 5xx retry, and an operator reading the error knows what to fix.
   */
  STORAGE_FULL: descriptor('UNAVAILABLE', 'insufficient storage'),
} satisfies Record<string, ErrorDescriptor>);

export type ErrorCodeName = keyof typeof ErrorCodes;

/** A client-visible registry error. `detail` is serialised as given (keep it free of secrets and paths). */
export class RegistryError extends Error {
  /** Which error of {@link ErrorCodes} this is (what `http/error-status.ts` maps to a status). */
  readonly kind: ErrorCodeName;
  readonly descriptor: ErrorDescriptor;
  readonly detail: unknown;
  /** Extra response headers (e.g. `Range` on a 416, `WWW-Authenticate` on a 401). */
  readonly headers: Record<string, string>;

  constructor(name: ErrorCodeName, detail?: unknown, options?: { message?: string; headers?: Record<string, string>; cause?: unknown }) {
    const d = ErrorCodes[name];
    super(options?.message ?? d.message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RegistryError';
    this.kind = name;
    this.descriptor = d;
    this.detail = detail;
    this.headers = options?.headers ?? {};
  }

  toJSON(): { code: string; message: string; detail?: unknown } {
    const body: { code: string; message: string; detail?: unknown } = { code: this.descriptor.code, message: this.message };
    if (this.detail !== undefined) body.detail = this.detail;
    return body;
  }
}

/** Shorthand used by handlers: `throw registryError('BLOB_UNKNOWN', {digest})`. */
export function registryError(
  name: ErrorCodeName,
  detail?: unknown,
  options?: { message?: string; headers?: Record<string, string>; cause?: unknown },
): RegistryError {
  return new RegistryError(name, detail, options);
}

/** Errors of the storage layer that are not the client's fault but an unavailable backend (S3 down, Redis down). */
export class BackendUnavailableError extends Error {
  /** Which backend: `storage` (a storage driver, the default) or `redis` (the upload session store). */
  readonly backend: 'storage' | 'redis';
  constructor(what: string, options?: { cause?: unknown; backend?: 'storage' | 'redis' }) {
    super(`${what} unavailable`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BackendUnavailableError';
    this.backend = options?.backend ?? 'storage';
  }
}
