import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { BackendUnavailableError, RegistryError, registryError } from '../errors/registry-error.js';
import { InvalidPathError } from '../storage/driver.js';
import { statusOf } from './error-status.js';

/**
 * The one place that turns errors into responses: `{"errors":[{code,message,detail}]}` with the status of
 * `error-status.ts` (no body on HEAD). Expected client errors are logged at debug; anything unexpected is logged with its
 * stack and answered with a generic 500 that reveals nothing of the server.
 */
export function toRegistryError(err: unknown, request: FastifyRequest): RegistryError {
  if (err instanceof RegistryError) return err;
  if (err instanceof BackendUnavailableError) {
    const what = err.backend === 'redis' ? 'upload session store (redis)' : 'storage backend';
    request.log.error({ err }, `${what} unavailable`);
    return registryError('UNAVAILABLE', undefined, { message: `${what} unavailable, retry later`, headers: { 'Retry-After': '5' } });
  }
  if (err instanceof InvalidPathError) return registryError('NAME_INVALID');
  const full = storageFullMessage(err);
  if (full !== undefined) {
    request.log.error({ err }, full);
    return registryError('STORAGE_FULL', undefined, { message: full });
  }
  const fe = err as Partial<FastifyError>;
  // The same answer route matching gives a malformed percent-encoding in a path parameter (route-match.ts).
  if (fe.code === 'FST_ERR_BAD_URL') return registryError('NAME_INVALID', undefined, { message: 'malformed percent-encoding in path' });
  // fastify's own refusals (a body that does not parse, too large, of a type nothing reads) keep their meaning: a
  // 400 is a malformed request, not an unsupported operation.
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    if (fe.statusCode === 413) return registryError('REQUEST_TOO_BIG');
    if (fe.statusCode === 415) return registryError('MEDIA_TYPE_UNSUPPORTED');
    return registryError('BAD_REQUEST', fe.code !== undefined ? { reason: fe.code } : undefined);
  }
  request.log.error({ err }, 'unexpected error');
  return registryError('UNKNOWN', undefined, { message: 'internal server error' });
}

export async function sendError(err: unknown, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const e = toRegistryError(err, request);
  const status = statusOf(e);
  if (status < 500) request.log.debug({ code: e.descriptor.code, status }, e.message);
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.destroy();
    return;
  }
  reply.code(status);
  for (const [k, v] of Object.entries(e.headers)) if (v !== '') reply.header(k, v);
  if (request.method === 'HEAD') {
    reply.removeHeader('content-length');
    await reply.send();
    return;
  }
  await reply.type('application/json; charset=utf-8').send({ errors: [e.toJSON()] });
}

/**
 * The answer's message when `err` says the storage cannot take more data: the disk or quota is full (ENOSPC, EDQUOT)
 * or the filesystem is read-only (EROFS); else undefined. Answered 507 with code UNAVAILABLE (see STORAGE_FULL).
 */
export function storageFullMessage(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'ENOSPC') return 'insufficient storage: no space left on the storage device';
  if (code === 'EDQUOT') return 'insufficient storage: storage quota exceeded';
  if (code === 'EROFS') return 'insufficient storage: the storage is read-only';
  return undefined;
}
