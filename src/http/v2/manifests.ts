import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import type { RouteMatch } from '../../auth/access.js';
import { registryError } from '../../errors/registry-error.js';
import { MAX_MANIFEST_BYTES } from '../../oci/manifest.js';
import { isValidTag, parseReference, type Reference } from '../../oci/reference.js';
import type { Repository } from '../../registry/repository.js';
import { requestBody } from '../metrics.js';
import { methodNotAllowed, type RouteContext } from './context.js';

/** `/v2/<name>/manifests/<reference>`: GET, HEAD, PUT, DELETE. */
export async function manifest(ctx: RouteContext, repo: Repository, route: RouteMatch, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const name = repo.name;
  const ref = manifestReference(route.param as string, request.method);
  switch (request.method) {
    case 'GET':
    case 'HEAD': {
      const m = await repo.manifests.get(ref);
      if (!m) throw registryError('MANIFEST_UNKNOWN', { name, reference: route.param });
      reply
        .header('Content-Type', m.mediaType)
        .header('Docker-Content-Digest', m.digest.value)
        .header('ETag', `"${m.digest.value}"`)
        .header('Content-Length', String(m.bytes.length));
      if (request.method === 'HEAD') return reply.send();
      return reply.send(m.bytes);
    }
    case 'PUT': {
      const manifests = repo.manifests;
      const bytes = await readLimited(requestBody(request), MAX_MANIFEST_BYTES);
      const { digest, parsed } = await manifests.put(bytes, {
        contentType: request.headers['content-type'],
        ...(ref.kind === 'tag' ? { tag: ref.tag } : { digest: ref.digest }),
      });
      reply
        .code(201)
        .header('Location', ctx.location(`/v2/${name}/manifests/${digest.value}`))
        .header('Docker-Content-Digest', digest.value)
        .header('Content-Length', '0');
      // Spec: "If a manifest with a subject field is pushed, the registry MUST respond with OCI-Subject".
      if (parsed.subject) reply.header('OCI-Subject', parsed.subject.digest.value);
      return reply.send();
    }
    case 'DELETE': {
      if (!ctx.config.storage.deleteEnabled)
        throw registryError('UNSUPPORTED', undefined, { message: 'deletes are disabled (storage.delete.enabled)' });
      const deleted = ref.kind === 'digest' ? await repo.manifests.delete(ref.digest) : await repo.tags.delete(ref.tag);
      if (!deleted) throw registryError('MANIFEST_UNKNOWN', { name, reference: route.param });
      return reply.code(202).header('Content-Length', '0').send();
    }
    default:
      throw methodNotAllowed();
  }
}

/**
 * The manifest reference of a request. Spec: "If the manifest is not found in the registry, the response code MUST
 * be 404 Not Found" -- a reference that is not a valid tag can name nothing, so GET/HEAD/DELETE answer
 * MANIFEST_UNKNOWN (the conformance suite requires 404 for `.INVALID_MANIFEST_NAME`, as registry:2 answers); only a
 * PUT reports TAG_INVALID. Malformed digests stay DIGEST_INVALID.
 */
function manifestReference(param: string, method: string): Reference {
  if (method !== 'PUT' && !param.includes(':') && !isValidTag(param)) {
    throw registryError('MANIFEST_UNKNOWN', { reference: param.slice(0, 300) });
  }
  return parseReference(param);
}

/**
 * Reads a request body of at most `limit` bytes. A larger body is refused with 413; the rest of it is read and
 * dropped (up to a bound) so the client can still read the answer on its connection.
 */
async function readLimited(stream: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total <= limit) chunks.push(chunk);
    else if (total > limit * 16) break;
  }
  if (total > limit) throw registryError('MANIFEST_TOO_BIG', { limit });
  return Buffer.concat(chunks, total);
}
