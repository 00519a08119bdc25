import t from 'tap';
import { pino } from 'pino';
import type { FastifyRequest } from 'fastify';
import { ErrorCodes, registryError, type ErrorCodeName } from '../../src/errors/registry-error.js';
import { toRegistryError } from '../../src/http/error-handler.js';
import { ERROR_STATUS, statusOf } from '../../src/http/error-status.js';
import { InvalidPathError } from '../../src/storage/driver.js';

t.test('every error kind has one HTTP status', async (t) => {
  t.same(Object.keys(ERROR_STATUS).sort(), Object.keys(ErrorCodes).sort());
  const rows: Array<[ErrorCodeName, number, string]> = [
    ['BLOB_UNKNOWN', 404, 'BLOB_UNKNOWN'],
    ['BLOB_UPLOAD_BUSY', 409, 'BLOB_UPLOAD_INVALID'],
    ['MANIFEST_TOO_BIG', 413, 'MANIFEST_INVALID'],
    ['RANGE_INVALID', 416, 'RANGE_INVALID'],
    ['UNAUTHORIZED', 401, 'UNAUTHORIZED'],
    ['DENIED', 403, 'DENIED'],
    ['UNSUPPORTED', 405, 'UNSUPPORTED'],
    ['TOOMANYREQUESTS', 429, 'TOOMANYREQUESTS'],
    ['UNAVAILABLE', 503, 'UNAVAILABLE'],
    ['BAD_REQUEST', 400, 'BAD_REQUEST'],
  ];
  for (const [kind, status, code] of rows) {
    const e = registryError(kind);
    t.equal(statusOf(e), status, `${kind} → ${status}`);
    t.equal(e.toJSON().code, code, `${kind} is reported as ${code}`);
  }
});

t.test("fastify's own refusals keep their meaning", async (t) => {
  const request = { log: pino({ level: 'silent' }) } as unknown as FastifyRequest;
  const fastifyError = (statusCode: number, code: string) => Object.assign(new Error(code), { statusCode, code });
  const rows: Array<[unknown, number, string]> = [
    [fastifyError(400, 'FST_ERR_CTP_INVALID_JSON_BODY'), 400, 'BAD_REQUEST'],
    [fastifyError(400, 'FST_ERR_CTP_EMPTY_JSON_BODY'), 400, 'BAD_REQUEST'],
    [fastifyError(413, 'FST_ERR_CTP_BODY_TOO_LARGE'), 413, 'SIZE_INVALID'],
    [fastifyError(415, 'FST_ERR_CTP_INVALID_MEDIA_TYPE'), 415, 'UNSUPPORTED'],
    [fastifyError(400, 'FST_ERR_BAD_URL'), 400, 'NAME_INVALID'],
    [new InvalidPathError('../x'), 400, 'NAME_INVALID'],
    [new Error('boom'), 500, 'UNKNOWN'],
  ];
  for (const [err, status, code] of rows) {
    const e = toRegistryError(err, request);
    t.equal(statusOf(e), status, `${(err as Error).message} → ${status}`);
    t.equal(e.toJSON().code, code, `${(err as Error).message} → ${code}`);
  }
});
