import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { requiredAccess, type RouteMatch } from '../auth/access.js';
import type { Authorizer } from '../auth/authorizer.js';
import type { Config } from '../config/config.js';
import { registryError } from '../errors/registry-error.js';
import type { Namespace } from '../registry/repository.js';
import type { CatalogIndex } from '../services/catalog/catalog-index.js';
import type { Metrics } from './metrics.js';
import { requestContext } from './request-context.js';
import { matchRoute } from './route-match.js';
import { blob } from './v2/blobs.js';
import { catalog } from './v2/catalog.js';
import { methodNotAllowed, type Query, type RouteContext } from './v2/context.js';
import { manifest } from './v2/manifests.js';
import { referrers } from './v2/referrers.js';
import { tagsList } from './v2/tags.js';
import { upload, uploadStart } from './v2/uploads.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The API route kind, for metrics and logs. */
    routeKind?: string;
    /** The `/v2/` route the request path matched (set by the registry routes' onRequest hook). */
    v2Route?: RouteMatch;
  }
}

export interface RegistryRoutesOptions {
  config: Config;
  /**
   * The repositories: the domain with its decorators (pull-through cache, events, catalog index and repository
   * locks; see `composeNamespace` in compose.ts). The routes cannot tell which are there.
   */
  namespace: Namespace;
  authorizer: Authorizer;
  /** Counters for uploads in progress (the request metrics are recorded by the metrics plugin). */
  metrics?: Metrics;
  /** The catalog index: answers `_catalog`. */
  catalog: CatalogIndex;
}

/**
 * The distribution API under `/v2/`. One catch-all route per method hands the raw path to `matchRoute`; the
 * required access is computed by `requiredAccess` and checked by the authorizer before any handler runs, so no
 * route can skip authorization. The handlers live per resource in `v2/` (catalog, tags, manifests, blobs, uploads,
 * referrers) and share a {@link RouteContext}.
 */
export async function registryRoutes(app: FastifyInstance, opts: RegistryRoutesOptions): Promise<void> {
  const { config, namespace, authorizer } = opts;

  // Bodies are streamed by the handlers themselves; nothing is parsed or buffered by fastify.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));

  const ctx: RouteContext = {
    ...opts,
    location: (path) => (config.http.host ? `${config.http.host}${path}` : path),
  };

  // The route is matched first, so every later hook (the metrics' in-flight count, the access log) knows it; a path
  // that names no API endpoint or has a malformed name is answered here.
  app.addHook('onRequest', (request, _reply, done) => {
    const url = request.raw.url ?? '/';
    const q = url.indexOf('?');
    const rawPath = q < 0 ? url : url.slice(0, q);
    let route: RouteMatch | null;
    try {
      route = matchRoute(rawPath === '/v2' ? '/v2/' : rawPath);
    } catch (err) {
      done(err as Error);
      return;
    }
    if (!route) {
      done(registryError('NOT_FOUND', undefined, { message: 'no such API endpoint' }));
      return;
    }
    request.v2Route = route;
    request.routeKind = route.kind;
    done();
  });

  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const route = request.v2Route!;
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
        return catalog(ctx, principal, reply, query);
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
        return manifest(ctx, repo, route, request, reply);
      case 'blob':
        return blob(ctx, repo, route, request, reply);
      case 'upload-start':
        if (method !== 'POST') throw methodNotAllowed();
        return writing(() => uploadStart(ctx, repo, request, reply, query, principal));
      case 'upload':
        return method === 'PATCH' || method === 'PUT'
          ? writing(() => upload(ctx, repo, route, request, reply, query))
          : upload(ctx, repo, route, request, reply, query);
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

  for (const url of ['/v2', '/v2/*']) {
    app.route({ method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'], url, handler });
  }
}
