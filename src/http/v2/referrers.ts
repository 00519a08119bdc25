import type { FastifyReply } from 'fastify';
import type { RouteMatch } from '../../auth/access.js';
import { parseDigest } from '../../oci/digest.js';
import { MediaTypes } from '../../oci/manifest.js';
import type { Repository } from '../../registry/repository.js';
import type { Query } from './context.js';

/** `GET /v2/<name>/referrers/<digest>` with the `artifactType` filter. */
export async function referrers(repo: Repository, route: RouteMatch, reply: FastifyReply, query: Query): Promise<void> {
  const subject = parseDigest(route.param as string);
  const artifactType = query.artifactType !== undefined && query.artifactType !== '' ? query.artifactType : undefined;
  const manifests = await repo.referrers(subject, artifactType);
  // Spec: "If the registry supports filtering, it MUST include the OCI-Filters-Applied header".
  if (artifactType !== undefined) reply.header('OCI-Filters-Applied', 'artifactType');
  // Spec: "The Content-Type header MUST be set to application/vnd.oci.image.index.v1+json" -- sent as bytes so
  // fastify does not append "; charset=utf-8" to it.
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests }));
  await reply.type(MediaTypes.ociIndex).send(body);
}
