import type { FastifyReply, FastifyRequest } from 'fastify';
import type { RouteMatch } from '../../auth/access.js';
import { registryError } from '../../errors/registry-error.js';
import { parseDigest } from '../../oci/digest.js';
import type { Repository } from '../../registry/repository.js';
import { sendBlob } from '../blob-response.js';
import { methodNotAllowed, type RouteContext } from './context.js';

/** `/v2/<name>/blobs/<digest>`: GET and HEAD (with Range), DELETE. */
export async function blob(ctx: RouteContext, repo: Repository, route: RouteMatch, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const digest = parseDigest(route.param as string);
  switch (request.method) {
    case 'GET':
    case 'HEAD': {
      const content = await repo.blobs.get(digest, { headOnly: request.method === 'HEAD' });
      if (content === null) throw registryError('BLOB_UNKNOWN', { digest: digest.value });
      return sendBlob(content, ctx.config, request, reply);
    }
    case 'DELETE': {
      if (!ctx.config.storage.deleteEnabled)
        throw registryError('UNSUPPORTED', undefined, { message: 'deletes are disabled (storage.delete.enabled)' });
      if (!(await repo.blobs.delete(digest))) throw registryError('BLOB_UNKNOWN', { digest: digest.value });
      return reply.code(202).header('Content-Length', '0').send();
    }
    default:
      throw methodNotAllowed();
  }
}
