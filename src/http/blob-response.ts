import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config/config.js';
import { registryError } from '../errors/registry-error.js';
import type { Digest } from '../oci/digest.js';
import { isNotFound } from '../storage/driver.js';
import type { RegistryStore } from '../storage/registry-store.js';
import { parseRangeHeader } from './range.js';

/** Expiry of presigned redirect URLs for blob GETs, unless the driver configures its own. */
const REDIRECT_EXPIRY_SECONDS = 20 * 60;

/** The headers of every blob answer: content is immutable, so it may be cached for a year. */
export function blobHeaders(reply: FastifyReply, d: Digest): FastifyReply {
  return reply
    .header('Content-Type', 'application/octet-stream')
    .header('Docker-Content-Digest', d.value)
    .header('ETag', `"${d.value}"`)
    .header('Accept-Ranges', 'bytes')
    .header('Cache-Control', 'max-age=31536000');
}

/**
 * Answers GET/HEAD for a blob in storage (pushed or cached alike): a 307 to the driver's direct URL when it offers
 * one and redirects are on, else the bytes, honouring a single `Range` (206; 416 with the total size in
 * `Content-Range` when the range lies outside the blob).
 */
export async function sendBlob(
  store: RegistryStore,
  config: Config,
  d: Digest,
  size: number,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<void> {
  if (request.method === 'GET' && !config.storage.redirectDisabled) {
    const url = await store.blobRedirectURL(d, 'GET', store.driver.redirectExpirySeconds ?? REDIRECT_EXPIRY_SECONDS);
    if (url) {
      await reply.code(307).header('Location', url).header('Docker-Content-Digest', d.value).send();
      return;
    }
  }
  blobHeaders(reply, d);
  const range = parseRangeHeader(request.headers.range, size);
  if (range === 'unsatisfiable') {
    throw registryError('RANGE_INVALID', { size }, { headers: { 'Content-Range': `bytes */${size}` } });
  }
  if (range) reply.code(206).header('Content-Range', `bytes ${range.start}-${range.end}/${size}`);
  const start = range ? range.start : 0;
  const length = range ? range.end - range.start + 1 : size;
  reply.header('Content-Length', String(length));
  if (request.method === 'HEAD' || length === 0) {
    await reply.send();
    return;
  }
  let body;
  try {
    body = await store.openBlob(d, start, length);
  } catch (err) {
    // Deleted since its size was read (garbage collection, a concurrent delete): the blob is unknown now, and the
    // answer must not carry the headers (a year of Cache-Control) of the blob it no longer has.
    if (!isNotFound(err)) throw err;
    for (const h of ['Content-Type', 'Docker-Content-Digest', 'ETag', 'Accept-Ranges', 'Cache-Control', 'Content-Range', 'Content-Length']) {
      reply.removeHeader(h);
    }
    throw registryError('BLOB_UNKNOWN', { digest: d.value });
  }
  await reply.send(body);
}
