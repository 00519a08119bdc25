/**
 * The one registry of distribution error codes.
 *
 * Every error a client can see is described here once, with its HTTP status and the default message of the
 * distribution spec. Handlers throw a {@link RegistryError}; the error handler in `errors/handler.ts` is the only
 * place that turns one into the `{"errors":[{code,message,detail}]}` body.
 */

export interface ErrorDescriptor {
  readonly code: string;
  readonly message: string;
  readonly status: number;
}

function descriptor(code: string, status: number, message: string): ErrorDescriptor {
  return Object.freeze({ code, status, message });
}

export const ErrorCodes = Object.freeze({
  BLOB_UNKNOWN: descriptor('BLOB_UNKNOWN', 404, 'blob unknown to registry'),
  BLOB_UPLOAD_INVALID: descriptor('BLOB_UPLOAD_INVALID', 400, 'blob upload invalid'),
  BLOB_UPLOAD_BUSY: descriptor('BLOB_UPLOAD_INVALID', 409, 'another request is writing to this upload'),
  BLOB_UPLOAD_UNKNOWN: descriptor('BLOB_UPLOAD_UNKNOWN', 404, 'blob upload unknown to registry'),
  DIGEST_INVALID: descriptor('DIGEST_INVALID', 400, 'provided digest did not match uploaded content'),
  MANIFEST_BLOB_UNKNOWN: descriptor('MANIFEST_BLOB_UNKNOWN', 400, 'manifest references a manifest or blob unknown to registry'),
  MANIFEST_INVALID: descriptor('MANIFEST_INVALID', 400, 'manifest invalid'),
  MANIFEST_UNKNOWN: descriptor('MANIFEST_UNKNOWN', 404, 'manifest unknown to registry'),
  NAME_INVALID: descriptor('NAME_INVALID', 400, 'invalid repository name'),
  NAME_UNKNOWN: descriptor('NAME_UNKNOWN', 404, 'repository name not known to registry'),
  SIZE_INVALID: descriptor('SIZE_INVALID', 400, 'provided length did not match content length'),
  TAG_INVALID: descriptor('TAG_INVALID', 400, 'manifest tag did not match URI'),
  PAGINATION_NUMBER_INVALID: descriptor('PAGINATION_NUMBER_INVALID', 400, 'invalid number of results requested'),
  RANGE_INVALID: descriptor('RANGE_INVALID', 416, 'invalid content range'),
  MANIFEST_TOO_BIG: descriptor('MANIFEST_INVALID', 413, 'manifest too big'),
  UNAUTHORIZED: descriptor('UNAUTHORIZED', 401, 'authentication required'),
  DENIED: descriptor('DENIED', 403, 'requested access to the resource is denied'),
  UNSUPPORTED: descriptor('UNSUPPORTED', 405, 'the operation is unsupported'),
  TOOMANYREQUESTS: descriptor('TOOMANYREQUESTS', 429, 'too many requests'),
  UNAVAILABLE: descriptor('UNAVAILABLE', 503, 'service unavailable'),
  UNKNOWN: descriptor('UNKNOWN', 500, 'unknown error'),
  NOT_FOUND: descriptor('NOT_FOUND', 404, 'not found'),
  /** The HTTP parser refused the request (malformed chunked body, bad header); see `http/client-errors.ts`. */
  MALFORMED_REQUEST: descriptor('UNSUPPORTED', 400, 'malformed HTTP request'),
  REQUEST_TIMEOUT: descriptor('UNAVAILABLE', 408, 'request timed out'),
  HEADERS_TOO_LARGE: descriptor('UNSUPPORTED', 431, 'request headers too large'),
  /**
   * The storage cannot take more data: the disk is full (ENOSPC, EDQUOT) or mounted read-only (EROFS). Distribution
   * has no code for it; berth answers 507 Insufficient Storage with code UNAVAILABLE and a message naming the cause,
   * so clients that retry on 5xx retry, and an operator reading the error knows what to fix.
   */
  STORAGE_FULL: descriptor('UNAVAILABLE', 507, 'insufficient storage'),
} satisfies Record<string, ErrorDescriptor>);

export type ErrorCodeName = keyof typeof ErrorCodes;

/** A client-visible registry error. `detail` is serialised as given (keep it free of secrets and paths). */
export class RegistryError extends Error {
  readonly descriptor: ErrorDescriptor;
  readonly detail: unknown;
  /** Extra response headers (e.g. `Range` on a 416, `WWW-Authenticate` on a 401). */
  readonly headers: Record<string, string>;

  constructor(name: ErrorCodeName, detail?: unknown, options?: { message?: string; headers?: Record<string, string>; cause?: unknown }) {
    const d = ErrorCodes[name];
    super(options?.message ?? d.message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RegistryError';
    this.descriptor = d;
    this.detail = detail;
    this.headers = options?.headers ?? {};
  }

  get status(): number {
    return this.descriptor.status;
  }

  toJSON(): { code: string; message: string; detail?: unknown } {
    const body: { code: string; message: string; detail?: unknown } = { code: this.descriptor.code, message: this.message };
    if (this.detail !== undefined) body.detail = this.detail;
    return body;
  }
}

/** Shorthand used by handlers: `throw registryError('BLOB_UNKNOWN', {digest})`. */
export function registryError(name: ErrorCodeName, detail?: unknown, options?: { message?: string; headers?: Record<string, string>; cause?: unknown }): RegistryError {
  return new RegistryError(name, detail, options);
}

/** Errors of the storage layer that are not the client's fault but an unavailable backend (S3 down, Redis down). */
export class BackendUnavailableError extends Error {
  constructor(what: string, options?: { cause?: unknown }) {
    super(`${what} unavailable`, options);
    this.name = 'BackendUnavailableError';
  }
}
