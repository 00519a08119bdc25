import type { FastifyReply, FastifyRequest } from 'fastify';
import { mountSources, type RouteMatch } from '../../auth/access.js';
import type { Principal } from '../../auth/authorizer.js';
import { registryError } from '../../errors/registry-error.js';
import { parseDigest, type Digest } from '../../oci/digest.js';
import type { MountSource, Repository } from '../../registry/repository.js';
import { uploadRangeHeader, type ChunkRange } from '../../uploads/upload-service.js';
import { hasBody, requestBody } from '../metrics.js';
import { methodNotAllowed, type Query, type RouteContext } from './context.js';

function sessionHeaders(ctx: RouteContext, reply: FastifyReply, name: string, id: string, offset: number): FastifyReply {
  return reply
    .header('Location', ctx.location(`/v2/${name}/blobs/uploads/${id}`))
    .header('Docker-Upload-UUID', id)
    .header('Range', uploadRangeHeader(offset))
    .header('Content-Length', '0');
}

function blobCreated(ctx: RouteContext, reply: FastifyReply, name: string, digest: Digest): FastifyReply {
  return reply
    .code(201)
    .header('Location', ctx.location(`/v2/${name}/blobs/${digest.value}`))
    .header('Docker-Content-Digest', digest.value)
    .header('Content-Length', '0');
}

/** `POST /v2/<name>/blobs/uploads/`: a new session, a monolithic upload (`?digest=`) or a mount. */
export async function uploadStart(
  ctx: RouteContext,
  repo: Repository,
  request: FastifyRequest,
  reply: FastifyReply,
  query: Query,
  principal: Principal,
): Promise<void> {
  const name = repo.name;
  const uploads = repo.uploads;
  if (query.mount) {
    // Spec: "If the registry has the blob in the `from` repository it MAY mount it and respond 201; otherwise it
    // MUST fall back to starting an upload session (202)". Without `from`, when automatic cross-mounting is on,
    // berth mounts from a repository the caller may pull (`mountSources`), else starts an upload.
    const digest = parseDigest(query.mount);
    const source: MountSource = query.from ? { from: query.from } : { candidates: mountSources(principal) };
    if (await repo.blobs.mount(digest, source)) {
      return blobCreated(ctx, reply, name, digest).send();
    }
  } else if (query.digest !== undefined) {
    const digest = parseDigest(query.digest);
    await uploads.monolithic(name, digest, requestBody(request), chunkRange(request, false));
    return blobCreated(ctx, reply, name, digest).send();
  }
  const session = await uploads.start(name);
  return sessionHeaders(ctx, reply.code(202), name, session.id, 0).send();
}

/** `/v2/<name>/blobs/uploads/<id>`: GET (status), PATCH (a chunk), PUT (complete), DELETE (cancel). */
export async function upload(
  ctx: RouteContext,
  repo: Repository,
  route: RouteMatch,
  request: FastifyRequest,
  reply: FastifyReply,
  query: Query,
): Promise<void> {
  const name = repo.name;
  const uploads = repo.uploads;
  const id = route.param as string;
  // An upload begun before its repository was deleted is refused by the domain (indexing-namespace.ts).
  switch (request.method) {
    case 'GET': {
      const session = await uploads.get(name, id);
      return sessionHeaders(ctx, reply.code(204), name, id, session.offset).send();
    }
    case 'PATCH': {
      const session = await uploads.append(name, id, requestBody(request), chunkRange(request, true));
      return sessionHeaders(ctx, reply.code(202), name, id, session.offset).send();
    }
    case 'PUT': {
      // Spec: the closing PUT "MUST" carry `?digest=`; it may carry the last chunk as its body.
      if (!query.digest) throw registryError('DIGEST_INVALID', undefined, { message: 'digest parameter missing' });
      const digest = parseDigest(query.digest);
      const range = chunkRange(request, true);
      await uploads.complete(name, id, digest, hasBody(request) ? requestBody(request) : null, range);
      return blobCreated(ctx, reply, name, digest).send();
    }
    case 'DELETE':
      await uploads.cancel(name, id);
      return reply.code(204).header('Content-Length', '0').send();
    default:
      throw methodNotAllowed();
  }
}

/** The position a request body claims: `Content-Range: <start>-<end>` (PATCH/PUT) and `Content-Length`. */
function chunkRange(request: FastifyRequest, allowContentRange: boolean): ChunkRange {
  const range: ChunkRange = {};
  const len = request.headers['content-length'];
  if (len !== undefined) {
    if (!/^\d+$/.test(len)) throw registryError('SIZE_INVALID', undefined, { message: 'invalid Content-Length' });
    range.length = Number(len);
  }
  const cr = request.headers['content-range'];
  if (allowContentRange && cr !== undefined) {
    const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(cr.trim());
    if (!m || Number(m[2]) < Number(m[1])) {
      throw registryError('RANGE_INVALID', { contentRange: cr.slice(0, 100) }, { message: 'invalid Content-Range' });
    }
    range.start = Number(m[1]);
    range.end = Number(m[2]);
  }
  return range;
}
