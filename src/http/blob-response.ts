import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config/config.js';
import { registryError } from '../errors/registry-error.js';
import type { Digest } from '../oci/digest.js';
import type { BlobContent } from '../registry/repository.js';
import { canRecycleBuffers, isNotFound } from '../storage/driver.js';
import { parseRangeHeader } from './range.js';

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
 * Answers GET/HEAD for a blob (stored, cached or still arriving from an upstream alike): a 307 to the driver's direct URL when it offers
 * one and redirects are on, else the bytes, honouring a single `Range` (206; 416 with the total size in
 * `Content-Range` when the range lies outside the blob).
 */
export async function sendBlob(blob: BlobContent, config: Config, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const d = blob.digest;
  if (request.method === 'GET' && !config.storage.redirectDisabled) {
    const url = await blob.redirectURL('GET');
    if (url) {
      await reply.code(307).header('Location', url).header('Docker-Content-Digest', d.value).send();
      return;
    }
  }
  blobHeaders(reply, d);
  const size = blob.size;
  let start = 0;
  let end: number | undefined;
  // The size of a blob still arriving from an upstream may be unknown: then the whole body is sent, unranged.
  if (size !== undefined) {
    const range = parseRangeHeader(request.headers.range, size);
    if (range === 'unsatisfiable') {
      throw registryError('RANGE_INVALID', { size }, { headers: { 'Content-Range': `bytes */${size}` } });
    }
    if (range) {
      reply.code(206).header('Content-Range', `bytes ${range.start}-${range.end}/${size}`);
      start = range.start;
      end = range.end + 1;
    }
    reply.header('Content-Length', String((end ?? size) - start));
  }
  if (request.method === 'HEAD' || (size !== undefined && (end ?? size) - start === 0)) {
    await reply.send();
    return;
  }
  let body;
  try {
    body = await blob.open(start, end);
  } catch (err) {
    // Deleted since its size was read (garbage collection, a concurrent delete): the blob is unknown now, and the
    // answer must not carry the headers (a year of Cache-Control) of the blob it no longer has.
    if (!isNotFound(err)) throw err;
    for (const h of ['Content-Type', 'Docker-Content-Digest', 'ETag', 'Accept-Ranges', 'Cache-Control', 'Content-Range', 'Content-Length']) {
      reply.removeHeader(h);
    }
    throw registryError('BLOB_UNKNOWN', { digest: d.value });
  }
  // fastify pipes the body into the response, which hands each chunk to the socket before it calls back: a reader
  // that can reuse its buffers then allocates none per chunk.
  if (canRecycleBuffers(body)) body.recycleBuffersWhenPiped();
  await reply.send(body);
}
