import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import { mountSources, requiredAccess, type RouteMatch } from '../auth/access.js';
import type { Authorizer, Principal } from '../auth/authorizer.js';
import type { Config } from '../config/config.js';
import { DEFAULT_PAGE, MAX_PAGE, type CatalogIndex } from '../services/catalog/catalog-index.js';
import type { RepositoryLocks } from '../services/catalog/repository-locks.js';
import { registryError } from '../errors/registry-error.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES, MediaTypes } from '../oci/manifest.js';
import { isValidTag, parseReference, type Reference } from '../oci/reference.js';
import type { MountSource, Namespace, Repository, TagPage } from '../registry/repository.js';
import { uploadRangeHeader, type ChunkRange } from '../uploads/upload-service.js';
import { requestBody, type Metrics } from './metrics.js';
import { matchRoute } from './route-match.js';
import { requestContext } from './request-context.js';
import { sendBlob } from './blob-response.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The API route kind, for metrics and logs. */
    routeKind?: string;
  }
}

export interface RegistryRoutesOptions {
  config: Config;
  /** The repositories (local, or decorated by the pull-through cache: the routes cannot tell). */
  namespace: Namespace;
  authorizer: Authorizer;
  /** Counters for uploads in progress (the request metrics are recorded by the metrics plugin). */
  metrics?: Metrics;
  /** The catalog index: answers `_catalog`, and is told about every push and delete. */
  catalog: CatalogIndex;
  /** Writes into a repository hold its lock shared, so a repository delete never interleaves with them. */
  locks: RepositoryLocks;
}

type Query = Record<string, string | undefined>;

/**
 * The distribution API under `/v2/`. One catch-all route per method hands the raw path to `matchRoute`; the
 * required access is computed by `requiredAccess` and checked by the authorizer before any handler runs, so no
 * route can skip authorization.
 */
export async function registryRoutes(app: FastifyInstance, opts: RegistryRoutesOptions): Promise<void> {
  const { config, namespace, authorizer } = opts;

  // Bodies are streamed by the handlers themselves; nothing is parsed or buffered by fastify.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));

  const location = (path: string): string => (config.http.host ? `${config.http.host}${path}` : path);

  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const rawPath = (request.raw.url ?? '/').split('?')[0] ?? '/';
    const route = matchRoute(rawPath === '/v2' ? '/v2/' : rawPath);
    if (!route) throw registryError('NOT_FOUND', undefined, { message: 'no such API endpoint' });
    request.routeKind = route.kind;
    const query = request.query as Query;
    const access = requiredAccess(route, request.method, query);
    const principal = await authorizer.authorize({ method: request.method, headers: request.headers, ip: request.ip, id: request.id }, access);
    request.principal = principal;
    const method = request.method;
    if (config.storage.readOnly && method !== 'GET' && method !== 'HEAD') {
      throw registryError('UNSUPPORTED', undefined, { message: 'registry is in read-only mode' });
    }
    if (route.kind === 'base' || route.kind === 'catalog') {
      if (route.kind === 'catalog') {
        if (method !== 'GET') throw methodNotAllowed();
        return catalog(principal, reply, query);
      }
      if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed();
      await reply.type('application/json').send({});
      return;
    }
    const repo = namespace.repository(route.name as string, query.ns, requestContext(request, config));
    // Registry proxying proposal (distribution-spec#66, what containerd implements): "A `ns` query parameter on pull
    // operations is OPTIONAL, but when used specifies the host in a repository name used by a client" and "A proxy
    // registry MAY use the `ns` query parameter to resolve an upstream registry host". The response names the
    // namespace that was served (containerd ignores the header; it tells a human or a script what happened).
    if (repo.namespace !== undefined) reply.header('OCI-Namespace', repo.namespace);
    switch (route.kind) {
      case 'tags':
        if (method !== 'GET') throw methodNotAllowed();
        return tagsList(repo, reply, query);
      case 'manifest':
        return method === 'GET' || method === 'HEAD'
          ? manifest(repo, route, request, reply)
          : opts.locks.shared(repo.name, () => manifest(repo, route, request, reply));
      case 'blob':
        return blob(repo, route, request, reply);
      case 'upload-start':
        if (method !== 'POST') throw methodNotAllowed();
        return opts.locks.shared(repo.name, () => writing(() => uploadStart(repo, request, reply, query, principal)));
      case 'upload':
        return method === 'PATCH' || method === 'PUT'
          ? opts.locks.shared(repo.name, () => writing(() => upload(repo, route, request, reply, query)))
          : upload(repo, route, request, reply, query);
      case 'referrers':
        if (method !== 'GET') throw methodNotAllowed();
        return referrers(repo, route, reply, query);
    }
  };

  /** Counts a request that writes upload data in `berth_uploads_in_progress` while it runs. */
  async function writing(run: () => Promise<void>): Promise<void> {
    opts.metrics?.uploadsInProgress.inc();
    try {
      await run();
    } finally {
      opts.metrics?.uploadsInProgress.dec();
    }
  }

  // ---- catalog and tags --------------------------------------------------------------------------------------

  /** The page a request asks for: `n` (a non-negative integer) and `last`. */
  function pageQuery(query: Query): TagPage {
    const page: TagPage = {};
    if (query.n !== undefined && query.n !== '') {
      if (typeof query.n !== 'string' || !/^\d{1,9}$/.test(query.n)) {
        throw registryError('PAGINATION_NUMBER_INVALID', { n: query.n }, { message: 'n must be a non-negative integer' });
      }
      page.n = Number(query.n);
    }
    if (query.last !== undefined && query.last !== '') page.last = query.last;
    return page;
  }

  /**
   * `_catalog` from the catalog index, never a storage walk per request: a default page of 100 (as registry:2), at
   * most 1000 (a larger `n` is PAGINATION_NUMBER_INVALID, as Distribution answers above `catalog.maxentries`), and
   * only repositories the caller may pull (registry:2 lists every name to anyone with the catalog scope).
   */
  async function catalog(principal: Principal, reply: FastifyReply, query: Query): Promise<void> {
    let n = DEFAULT_PAGE;
    if (query.n !== undefined && query.n !== '') {
      if (!/^\d{1,9}$/.test(query.n))
        throw registryError('PAGINATION_NUMBER_INVALID', { n: query.n.slice(0, 20) }, { message: 'n must be a non-negative integer' });
      n = Number(query.n);
      if (n > MAX_PAGE) throw registryError('PAGINATION_NUMBER_INVALID', { n, max: MAX_PAGE }, { message: `n must be at most ${MAX_PAGE}` });
    }
    const last = query.last === undefined || query.last === '' ? undefined : query.last;
    const page = n === 0 ? { entries: [], next: null } : await opts.catalog.page(last, n, (name) => authorizer.canPull(principal, name));
    if (page.next !== null) reply.header('Link', `</v2/_catalog?n=${n}&last=${encodeURIComponent(page.next)}>; rel="next"`);
    await reply.type('application/json').send({ repositories: page.entries.map((e) => e.name) });
  }

  /** Tells the catalog index that `name` changed; a failure is logged, never fails the request that wrote. */
  async function indexChanged(request: FastifyRequest, name: string, onlyIfNew = false): Promise<void> {
    try {
      await (onlyIfNew ? opts.catalog.ensure(name) : opts.catalog.refresh(name));
    } catch (err) {
      request.log.warn({ err, repository: name }, 'catalog index not updated');
    }
  }

  /**
   * Spec: when more entries remain, "a `Link: <url>; rel="next"` header" gives the next page. The `ns` of a
   * mirrored repository is kept, so the next page is served from the same upstream.
   */
  function nextLink(reply: FastifyReply, basePath: string, page: TagPage, next: string | undefined, ns?: string): void {
    if (next === undefined) return;
    const params = new URLSearchParams();
    if (page.n !== undefined) params.set('n', String(page.n));
    params.set('last', next);
    if (ns !== undefined) params.set('ns', ns);
    reply.header('Link', `<${basePath}?${params.toString()}>; rel="next"`);
  }

  async function tagsList(repo: Repository, reply: FastifyReply, query: Query): Promise<void> {
    const page = pageQuery(query);
    const result = await repo.tags.list(page);
    if (result === null) throw registryError('NAME_UNKNOWN', { name: repo.name });
    nextLink(reply, `/v2/${repo.name}/tags/list`, page, result.next, repo.namespace);
    await reply.type('application/json').send({ name: repo.name, tags: result.tags });
  }

  // ---- manifests ---------------------------------------------------------------------------------------------

  async function manifest(repo: Repository, route: RouteMatch, request: FastifyRequest, reply: FastifyReply): Promise<void> {
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
          .header('Location', location(`/v2/${name}/manifests/${digest.value}`))
          .header('Docker-Content-Digest', digest.value)
          .header('Content-Length', '0');
        // Spec: "If a manifest with a subject field is pushed, the registry MUST respond with OCI-Subject".
        if (parsed.subject) reply.header('OCI-Subject', parsed.subject.digest.value);
        await indexChanged(request, name);
        return reply.send();
      }
      case 'DELETE': {
        if (!config.storage.deleteEnabled)
          throw registryError('UNSUPPORTED', undefined, { message: 'deletes are disabled (storage.delete.enabled)' });
        const deleted = ref.kind === 'digest' ? await repo.manifests.delete(ref.digest) : await repo.tags.delete(ref.tag);
        if (!deleted) throw registryError('MANIFEST_UNKNOWN', { name, reference: route.param });
        await indexChanged(request, name);
        return reply.code(202).header('Content-Length', '0').send();
      }
      default:
        throw methodNotAllowed();
    }
  }

  // ---- blobs -------------------------------------------------------------------------------------------------

  async function blob(repo: Repository, route: RouteMatch, request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const digest = parseDigest(route.param as string);
    switch (request.method) {
      case 'GET':
      case 'HEAD': {
        const content = await repo.blobs.get(digest, { headOnly: request.method === 'HEAD' });
        if (content === null) throw registryError('BLOB_UNKNOWN', { digest: digest.value });
        return sendBlob(content, config, request, reply);
      }
      case 'DELETE': {
        if (!config.storage.deleteEnabled)
          throw registryError('UNSUPPORTED', undefined, { message: 'deletes are disabled (storage.delete.enabled)' });
        if (!(await repo.blobs.delete(digest))) throw registryError('BLOB_UNKNOWN', { digest: digest.value });
        return reply.code(202).header('Content-Length', '0').send();
      }
      default:
        throw methodNotAllowed();
    }
  }

  // ---- uploads -----------------------------------------------------------------------------------------------

  function sessionHeaders(reply: FastifyReply, name: string, id: string, offset: number): FastifyReply {
    return reply
      .header('Location', location(`/v2/${name}/blobs/uploads/${id}`))
      .header('Docker-Upload-UUID', id)
      .header('Range', uploadRangeHeader(offset))
      .header('Content-Length', '0');
  }

  function blobCreated(reply: FastifyReply, name: string, digest: Digest): FastifyReply {
    return reply
      .code(201)
      .header('Location', location(`/v2/${name}/blobs/${digest.value}`))
      .header('Docker-Content-Digest', digest.value)
      .header('Content-Length', '0');
  }

  async function uploadStart(repo: Repository, request: FastifyRequest, reply: FastifyReply, query: Query, principal: Principal): Promise<void> {
    const name = repo.name;
    const uploads = repo.uploads;
    if (query.mount) {
      // Spec: "If the registry has the blob in the `from` repository it MAY mount it and respond 201; otherwise it
      // MUST fall back to starting an upload session (202)". Without `from`, when automatic cross-mounting is on,
      // berth mounts from a repository the caller may pull (`mountSources`), else starts an upload.
      const digest = parseDigest(query.mount);
      const source: MountSource = query.from ? { from: query.from } : { candidates: mountSources(principal) };
      if (await repo.blobs.mount(digest, source)) {
        await indexChanged(request, name, true);
        return blobCreated(reply, name, digest).send();
      }
    } else if (query.digest !== undefined) {
      const digest = parseDigest(query.digest);
      await uploads.monolithic(name, digest, requestBody(request), chunkRange(request, false));
      await indexChanged(request, name, true);
      return blobCreated(reply, name, digest).send();
    }
    const session = await uploads.start(name);
    return sessionHeaders(reply.code(202), name, session.id, 0).send();
  }

  async function upload(repo: Repository, route: RouteMatch, request: FastifyRequest, reply: FastifyReply, query: Query): Promise<void> {
    const name = repo.name;
    const uploads = repo.uploads;
    const id = route.param as string;
    // An upload begun before its repository was deleted went with it (the delete removed its data).
    const deletedAt = await opts.catalog.index.deletedAt(name);
    if (deletedAt !== null) {
      const session = await uploads.get(name, id);
      if (session.startedAt <= deletedAt) {
        await uploads.cancel(name, id).catch(() => undefined);
        throw registryError('BLOB_UPLOAD_UNKNOWN', { uuid: id });
      }
    }
    switch (request.method) {
      case 'GET': {
        const session = await uploads.get(name, id);
        return sessionHeaders(reply.code(204), name, id, session.offset).send();
      }
      case 'PATCH': {
        const session = await uploads.append(name, id, requestBody(request), chunkRange(request, true));
        return sessionHeaders(reply.code(202), name, id, session.offset).send();
      }
      case 'PUT': {
        // Spec: the closing PUT "MUST" carry `?digest=`; it may carry the last chunk as its body.
        if (!query.digest) throw registryError('DIGEST_INVALID', undefined, { message: 'digest parameter missing' });
        const digest = parseDigest(query.digest);
        const range = chunkRange(request, true);
        await uploads.complete(name, id, digest, hasBody(request) ? requestBody(request) : null, range);
        await indexChanged(request, name, true);
        return blobCreated(reply, name, digest).send();
      }
      case 'DELETE':
        await uploads.cancel(name, id);
        return reply.code(204).header('Content-Length', '0').send();
      default:
        throw methodNotAllowed();
    }
  }

  // ---- referrers ---------------------------------------------------------------------------------------------

  async function referrers(repo: Repository, route: RouteMatch, reply: FastifyReply, query: Query): Promise<void> {
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

  for (const url of ['/v2', '/v2/*']) {
    app.route({ method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'], url, handler });
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

function methodNotAllowed() {
  return registryError('UNSUPPORTED', undefined, { message: 'method not allowed on this endpoint' });
}

function hasBody(request: FastifyRequest): boolean {
  const len = request.headers['content-length'];
  if (len !== undefined) return Number(len) > 0;
  return request.headers['transfer-encoding'] !== undefined;
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
