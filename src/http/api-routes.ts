import type { Config } from '../config/config.js';
import { requestContext } from './request-context.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { requiredAccess, type RouteMatch } from '../auth/access.js';
import type { Authorizer, Principal } from '../auth/authorizer.js';
import { registryError } from '../errors/registry-error.js';
import { assertName } from '../oci/reference.js';
import type { Browser } from '../services/catalog/browse.js';
import { MAX_PAGE, type CatalogIndex } from '../services/catalog/catalog-index.js';
import { MAX_WARM_IMAGES, type WarmUpJobs } from '../proxy/warm-up-jobs.js';
import { parseWarmImage, parseWarmPlatform, type WarmImage, type WarmPlatform } from '../proxy/warm-up.js';

/** Options of {@link apiRoutes}. */
export interface ApiRoutesOptions {
  browser: Browser;
  catalog: CatalogIndex;
  authorizer: Authorizer;
  /** For the request context a delete's events carry. */
  config: Config;
  /** Warm-up jobs (`/api/v1/mirror/`), when a `proxy` is configured. */
  warmUp?: WarmUpJobs;
}

type Query = Record<string, string | undefined>;

/**
 * Matches `/api/v1/...` (raw path, before percent-decoding, as `/v2/` routes are matched). Names contain slashes,
 * so the routes are matched from the end.
 */
const API_PATTERNS: Array<{ re: RegExp; kind: RouteMatch['kind'] }> = [
  { re: /^repositories\/(.+)\/tags$/, kind: 'api-tags' },
  { re: /^repositories\/(.+)\/tags\/([^/]+)$/, kind: 'api-tag' },
  { re: /^repositories\/(.+)\/manifests\/([^/]+)$/, kind: 'api-manifest' },
  { re: /^repositories\/(.+)$/, kind: 'api-repository' },
];

/** The route of an `/api/v1/` or `/v1/` path, null when there is none. */
export function matchApiRoute(rawPath: string): RouteMatch | null {
  if (rawPath === '/v1/search') return { kind: 'search' };
  if (!rawPath.startsWith('/api/v1/')) return null;
  const rest = rawPath.slice('/api/v1/'.length);
  if (rest === 'repositories') return { kind: 'api-repositories' };
  if (rest === 'usage') return { kind: 'api-usage' };
  if (rest === 'mirror/pull') return { kind: 'api-mirror-pull', names: [] };
  const job = /^mirror\/pulls\/([0-9a-f-]{1,64})$/.exec(rest);
  if (job) return { kind: 'api-mirror-job', param: job[1] as string, names: [] };
  for (const { re, kind } of API_PATTERNS) {
    const m = re.exec(rest);
    if (!m) continue;
    const name = assertName(m[1] as string);
    if (m[2] === undefined) return { kind, name };
    let param: string;
    try {
      param = decodeURIComponent(m[2]);
    } catch {
      throw registryError('NAME_INVALID', undefined, { message: 'malformed percent-encoding in path' });
    }
    return { kind, name, param };
  }
  return null;
}

function pageSize(query: Query, fallback: number, max: number): number {
  if (query.n === undefined || query.n === '') return fallback;
  if (!/^\d{1,9}$/.test(query.n))
    throw registryError('PAGINATION_NUMBER_INVALID', { n: query.n.slice(0, 20) }, { message: 'n must be a non-negative integer' });
  const n = Number(query.n);
  if (n > max) throw registryError('PAGINATION_NUMBER_INVALID', { n, max }, { message: `n must be at most ${max}` });
  return n;
}

/** At most this many bytes of JSON in a request body. */
const MAX_JSON_BODY = 64 * 1024;

/** Reads a JSON request body of at most {@link MAX_JSON_BODY} bytes; BAD_REQUEST when it is not JSON. */
async function jsonBody(request: FastifyRequest): Promise<unknown> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of request.raw as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > MAX_JSON_BODY) throw registryError('BAD_REQUEST', { limit: MAX_JSON_BODY }, { message: `the body exceeds ${MAX_JSON_BODY} bytes` });
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks, total).toString('utf8'));
  } catch {
    throw registryError('BAD_REQUEST', undefined, { message: 'the body is not valid JSON' });
  }
}

/** The body of `POST /api/v1/mirror/pull`: `{"images": ["alpine:3.19", ...], "platform": "linux/amd64"}`. */
export function parseWarmRequest(body: unknown): { images: WarmImage[]; platform: WarmPlatform | undefined } {
  const bad = (message: string) => registryError('BAD_REQUEST', undefined, { message });
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw bad('expected a JSON object {"images": [...], "platform": "os/arch"}');
  const { images, platform, ...extra } = body as Record<string, unknown>;
  const unknown = Object.keys(extra);
  if (unknown.length > 0) throw bad(`unknown field ${JSON.stringify(unknown[0]?.slice(0, 64))}`);
  if (!Array.isArray(images) || images.length === 0) throw bad('images: expected a non-empty array of image references');
  if (images.length > MAX_WARM_IMAGES) throw bad(`images: at most ${MAX_WARM_IMAGES} per job`);
  const parsed = images.map((i, n) => {
    if (typeof i !== 'string' || i.length > 512) throw bad(`images[${n}]: expected an image reference (name[:tag|@digest])`);
    try {
      return parseWarmImage(i);
    } catch (err) {
      throw bad(`images[${n}]: ${(err as Error).message}`);
    }
  });
  if (platform !== undefined && platform !== null && typeof platform !== 'string') throw bad('platform: expected "os/arch[/variant]"');
  try {
    return { images: parsed, platform: typeof platform === 'string' ? parseWarmPlatform(platform.slice(0, 128)) : undefined };
  } catch (err) {
    throw bad(`platform: ${(err as Error).message}`);
  }
}

/**
 * The JSON API (`/api/v1/`, see docs/api.md) and Docker Hub's v1 search (`/v1/_ping`, `/v1/search`), which
 * `docker search HOST/term` calls. Access is decided by `requiredAccess` like `/v2/`; lists are filtered by what
 * the caller may pull.
 */
export async function apiRoutes(app: FastifyInstance, opts: ApiRoutesOptions): Promise<void> {
  const { browser, catalog, authorizer } = opts;

  /** The caller: anonymous when it sent no credentials and the route lists only what anonymous clients may pull. */
  async function principalFor(request: FastifyRequest, route: RouteMatch): Promise<Principal> {
    const access = requiredAccess(route, request.method, request.query as Query);
    const listing = route.kind === 'search' || route.kind === 'api-repositories';
    if (listing && request.headers.authorization === undefined && authorizer.anonymousListing) return {};
    const principal = await authorizer.authorize({ method: request.method, headers: request.headers, ip: request.ip }, access);
    // The events and audit lines of a delete name its user, as the access log does (src/http/request-context.ts).
    request.principal = principal;
    return principal;
  }

  // Bodies (only the warm-up's JSON) are read by the handler itself, so every mistake is an error JSON.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));

  // Docker's daemon pings before searching; it reads no more than that the registry answers.
  app.get('/v1/_ping', async (_request, reply) => reply.header('X-Docker-Registry-Standalone', 'true').send({}));

  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    const rawPath = (request.raw.url ?? '/').split('?')[0] ?? '/';
    const route = matchApiRoute(rawPath);
    if (!route) throw registryError('NOT_FOUND', undefined, { message: 'no such API endpoint' });
    request.routeKind = route.kind;
    const method = request.method;
    const query = request.query as Query;
    const principal = await principalFor(request, route);
    const canPull = (repo: string) => authorizer.canPull(principal, repo);
    const name = route.name as string;
    const only = (...methods: string[]) => {
      if (!methods.includes(method)) throw registryError('UNSUPPORTED', undefined, { message: 'method not allowed on this endpoint' });
    };
    switch (route.kind) {
      case 'search': {
        only('GET');
        return search(query, canPull, reply);
      }
      case 'api-repositories': {
        only('GET');
        const n = pageSize(query, 100, MAX_PAGE);
        const result = await browser.listRepositories({
          n,
          canPull,
          ...(query.q ? { q: query.q.slice(0, 256) } : {}),
          ...(query.last ? { last: query.last } : {}),
        });
        return reply.send(result);
      }
      case 'api-repository': {
        only('GET', 'DELETE');
        if (method === 'DELETE') {
          // Deletes go through the domain, which gives the delete event with this request (src/events/eventing-namespace.ts).
          await browser.deleteRepository(name, requestContext(request, opts.config));
          return reply.code(202).send({ deleted: name });
        }
        const entry = await catalog.index.get(name);
        const summary = entry ?? (await catalog.summarize(name));
        if (!summary) throw registryError('NAME_UNKNOWN', { name });
        return reply.send({ name: summary.name, tagCount: summary.tagCount, size: summary.size, lastPush: summary.lastPush });
      }
      case 'api-tags':
        only('GET');
        return reply.send({ tags: await browser.listTags(name, { untagged: query.untagged === '1' || query.untagged === 'true' }) });
      case 'api-tag':
        only('DELETE');
        await browser.deleteTag(name, route.param as string, requestContext(request, opts.config));
        return reply.code(202).send({ deleted: route.param });
      case 'api-manifest':
        only('GET', 'DELETE');
        if (method === 'DELETE') {
          await browser.deleteManifest(name, route.param as string, requestContext(request, opts.config));
          return reply.code(202).send({ deleted: route.param });
        }
        return reply.send(await browser.getImage(name, route.param as string));
      case 'api-usage':
        only('GET');
        return reply.send(await browser.usage());
      case 'api-mirror-pull': {
        only('POST');
        const jobs = warmUpJobs();
        // Authenticated first (principalFor above, no names yet); then the names the body gives decide.
        const { images, platform } = parseWarmRequest(await jsonBody(request));
        await principalFor(request, { ...route, names: images.map((i) => i.name) });
        const view = jobs.start(images, platform);
        return reply.code(202).header('Location', `/api/v1/mirror/pulls/${view.id}`).send(view);
      }
      case 'api-mirror-job': {
        only('GET');
        const job = warmUpJobs().get(route.param as string);
        if (!job) throw registryError('NOT_FOUND', { id: route.param }, { message: 'no such warm-up job (finished jobs are kept an hour)' });
        await principalFor(request, { ...route, names: job.names });
        return reply.send(job.view);
      }
      default:
        throw registryError('NOT_FOUND', undefined, { message: 'no such API endpoint' });
    }
  };

  function warmUpJobs(): WarmUpJobs {
    if (!opts.warmUp) throw registryError('UNSUPPORTED', undefined, { message: 'warm-up needs a proxy section: this registry mirrors nothing' });
    return opts.warmUp;
  }

  /**
   * Docker Hub's v1 search: `GET /v1/search?q=&n=&page=` →
   * `{num_results, query, page, page_size, num_pages, results: [{name, description, star_count, is_official,
   * is_automated}]}`. Docker's CLI asks for 25 (its `--limit`, 1 to 100).
   */
  async function search(query: Query, canPull: (repo: string) => Promise<boolean>, reply: FastifyReply): Promise<unknown> {
    const q = (query.q ?? '').slice(0, 256);
    const pageSizeN = Math.max(1, pageSize(query, 25, 100));
    const pageNo = query.page !== undefined && /^\d{1,6}$/.test(query.page) && Number(query.page) > 0 ? Number(query.page) : 1;
    const all = await catalog.search(q, canPull);
    const results = all.slice((pageNo - 1) * pageSizeN, pageNo * pageSizeN).map((e) => ({
      name: e.name,
      description: e.description,
      star_count: 0,
      is_official: false,
      is_automated: false,
    }));
    return reply.send({
      num_results: all.length,
      query: q,
      page: pageNo,
      page_size: pageSizeN,
      num_pages: Math.ceil(all.length / pageSizeN),
      results,
    });
  }

  for (const url of ['/v1/search', '/api/v1/*']) {
    app.route({ method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'], url, handler });
  }
}
