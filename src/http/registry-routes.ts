import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import { requiredAccess, type RouteMatch } from '../auth/access.js';
import type { Authorizer } from '../auth/authorizer.js';
import type { Config } from '../config/config.js';
import type { PullThrough } from '../proxy/index.js';
import { DEFAULT_PAGE, MAX_PAGE, type CatalogIndex } from '../services/catalog/catalog-index.js';
import type { RepositoryLocks } from '../services/catalog/repository-locks.js';
import type { Principal } from '../auth/authorizer.js';
import { registryError } from '../errors/registry-error.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES, MediaTypes } from '../oci/manifest.js';
import { assertName, isValidTag, parseReference, type Reference } from '../oci/reference.js';
import { compareStrings, type RegistryStore } from '../storage/registry-store.js';
import { uploadRangeHeader, type ChunkRange, type UploadService } from '../uploads/upload-service.js';
import { requestBody, type Metrics } from './metrics.js';
import { matchRoute } from './route-match.js';
import { sendBlob } from './blob-response.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The API route kind, for metrics and logs. */
    routeKind?: string;
  }
}

export interface RegistryRoutesOptions {
  config: Config;
  store: RegistryStore;
  uploads: UploadService;
  authorizer: Authorizer;
  /** Counters for uploads in progress (the request metrics are recorded by the metrics plugin). */
  metrics?: Metrics;
  /** The pull-through cache: answers requests for mirrored repositories first (src/proxy). */
  pullThrough?: PullThrough;
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
  const { config, store, uploads, authorizer } = opts;

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
    const principal = await authorizer.authorize({ method: request.method, headers: request.headers, ip: request.ip }, access);
    const method = request.method;
    if (config.storage.readOnly && method !== 'GET' && method !== 'HEAD') {
      throw registryError('UNSUPPORTED', undefined, { message: 'registry is in read-only mode' });
    }
    if (opts.pullThrough && (await opts.pullThrough.handle(route, request, reply, query))) return reply;
    switch (route.kind) {
      case 'base':
        if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed();
        await reply.type('application/json').send({});
        return;
      case 'catalog':
        if (method !== 'GET') throw methodNotAllowed();
        return catalog(principal, reply, query);
      case 'tags':
        if (method !== 'GET') throw methodNotAllowed();
        return tagsList(route, reply, query);
      case 'manifest':
        return method === 'GET' || method === 'HEAD' ? manifest(route, request, reply) : opts.locks.shared(route.name as string, () => manifest(route, request, reply));
      case 'blob':
        return blob(route, request, reply);
      case 'upload-start':
        if (method !== 'POST') throw methodNotAllowed();
        return opts.locks.shared(route.name as string, () => writing(() => uploadStart(route, request, reply, query)));
      case 'upload':
        return method === 'PATCH' || method === 'PUT'
          ? opts.locks.shared(route.name as string, () => writing(() => upload(route, request, reply, query)))
          : upload(route, request, reply, query);
      case 'referrers':
        if (method !== 'GET') throw methodNotAllowed();
        return referrers(route, reply, query);
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

  /**
   * Spec: "the response ... MUST be in lexical order"; with `n`, at most n entries; with `last`, only entries
   * after it; when more remain, a `Link: <url>; rel="next"` header gives the next page.
   */
  function paginate(all: string[], query: Query, basePath: string, reply: FastifyReply): string[] {
    let n: number | undefined;
    if (query.n !== undefined && query.n !== '') {
      if (typeof query.n !== 'string' || !/^\d{1,9}$/.test(query.n)) {
        throw registryError('PAGINATION_NUMBER_INVALID', { n: query.n }, { message: 'n must be a non-negative integer' });
      }
      n = Number(query.n);
    }
    const last = query.last;
    const after = last === undefined || last === '' ? all : all.filter((x) => compareStrings(x, last) > 0);
    if (n === undefined) return after;
    const page = after.slice(0, n);
    if (after.length > n && page.length > 0) {
      const lastOfPage = page[page.length - 1] as string;
      reply.header('Link', `<${basePath}?n=${n}&last=${encodeURIComponent(lastOfPage)}>; rel="next"`);
    }
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
      if (!/^\d{1,9}$/.test(query.n)) throw registryError('PAGINATION_NUMBER_INVALID', { n: query.n.slice(0, 20) }, { message: 'n must be a non-negative integer' });
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

  async function tagsList(route: RouteMatch, reply: FastifyReply, query: Query): Promise<void> {
    const name = route.name as string;
    const tags = await store.listTags(name);
    if (tags === null) throw registryError('NAME_UNKNOWN', { name });
    await reply.type('application/json').send({ name, tags: paginate(tags, query, `/v2/${name}/tags/list`, reply) });
  }

  // ---- manifests ---------------------------------------------------------------------------------------------

  async function manifest(route: RouteMatch, request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const name = route.name as string;
    const ref = manifestReference(route.param as string, request.method);
    switch (request.method) {
      case 'GET':
      case 'HEAD': {
        const digest = ref.kind === 'digest' ? ref.digest : await store.resolveTag(name, ref.tag);
        const m = digest ? await store.getManifest(name, digest) : null;
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
        const bytes = await readLimited(requestBody(request), MAX_MANIFEST_BYTES);
        const { digest, parsed } = await store.putManifest(name, bytes, {
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
        if (!config.storage.deleteEnabled) throw registryError('UNSUPPORTED', undefined, { message: 'deletes are disabled (storage.delete.enabled)' });
        const deleted = ref.kind === 'digest' ? await store.deleteManifest(name, ref.digest) : await store.deleteTag(name, ref.tag);
        if (!deleted) throw registryError('MANIFEST_UNKNOWN', { name, reference: route.param });
        await indexChanged(request, name);
        return reply.code(202).header('Content-Length', '0').send();
      }
      default:
        throw methodNotAllowed();
    }
  }

  // ---- blobs -------------------------------------------------------------------------------------------------

  async function blob(route: RouteMatch, request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const name = route.name as string;
    const digest = parseDigest(route.param as string);
    switch (request.method) {
      case 'GET':
      case 'HEAD': {
        const size = await store.repositoryBlobSize(name, digest);
        if (size === null) throw registryError('BLOB_UNKNOWN', { digest: digest.value });
        return sendBlob(store, config, digest, size, request, reply);
      }
      case 'DELETE': {
        if (!config.storage.deleteEnabled) throw registryError('UNSUPPORTED', undefined, { message: 'deletes are disabled (storage.delete.enabled)' });
        if (!(await store.unlinkBlob(name, digest))) throw registryError('BLOB_UNKNOWN', { digest: digest.value });
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

  async function uploadStart(route: RouteMatch, request: FastifyRequest, reply: FastifyReply, query: Query): Promise<void> {
    const name = route.name as string;
    if (query.mount) {
      // Spec: "If the registry has the blob in the `from` repository it MAY mount it and respond 201; otherwise it
      // MUST fall back to starting an upload session (202)". Without `from`, berth mounts from anywhere when
      // automatic cross-mounting is on.
      const digest = parseDigest(query.mount);
      let mountable = false;
      if (query.from) {
        const from = assertName(query.from);
        mountable = (await store.repositoryBlobSize(from, digest)) !== null;
      } else if (config.berth.automaticCrossMount) {
        mountable = (await store.blobSize(digest)) !== null;
      }
      if (mountable) {
        await store.linkBlob(name, digest);
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

  async function upload(route: RouteMatch, request: FastifyRequest, reply: FastifyReply, query: Query): Promise<void> {
    const name = route.name as string;
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

  async function referrers(route: RouteMatch, reply: FastifyReply, query: Query): Promise<void> {
    const name = route.name as string;
    const subject = parseDigest(route.param as string);
    const artifactType = query.artifactType !== undefined && query.artifactType !== '' ? query.artifactType : undefined;
    const manifests = await store.referrers(name, subject, artifactType);
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
