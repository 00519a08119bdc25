import type { ErrorCodeName, RegistryError } from '../errors/registry-error.js';

/**
 * The one table from domain error kind (src/errors) to HTTP status. Distribution's `errcode` registry pairs each
 * code with its status the same way; berth keeps the pairing in the HTTP layer so nothing below it knows HTTP.
 */
export const ERROR_STATUS: Readonly<Record<ErrorCodeName, number>> = Object.freeze({
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_BUSY: 409,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  TAG_INVALID: 400,
  PAGINATION_NUMBER_INVALID: 400,
  RANGE_INVALID: 416,
  MANIFEST_TOO_BIG: 413,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  UNAVAILABLE: 503,
  UNKNOWN: 500,
  NOT_FOUND: 404,
  BAD_REQUEST: 400,
  REQUEST_TOO_BIG: 413,
  MEDIA_TYPE_UNSUPPORTED: 415,
  REQUEST_TIMEOUT: 408,
  HEADERS_TOO_LARGE: 431,
  STORAGE_FULL: 507,
});

/** The HTTP status a registry error is answered with. */
export function statusOf(err: RegistryError): number {
  return ERROR_STATUS[err.kind];
}
