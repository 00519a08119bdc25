import type { FastifyReply } from 'fastify';
import { registryError } from '../../errors/registry-error.js';
import type { Repository, TagPage } from '../../registry/repository.js';
import type { Query } from './context.js';

/** The page a request asks for: `n` (a non-negative integer) and `last`. */
export function pageQuery(query: Query): TagPage {
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
 * Spec: when more entries remain, "a `Link: <url>; rel="next"` header" gives the next page. The `ns` of a
 * mirrored repository is kept, so the next page is served from the same upstream.
 */
export function nextLink(reply: FastifyReply, basePath: string, page: TagPage, next: string | undefined, ns?: string): void {
  if (next === undefined) return;
  const params = new URLSearchParams();
  if (page.n !== undefined) params.set('n', String(page.n));
  params.set('last', next);
  if (ns !== undefined) params.set('ns', ns);
  reply.header('Link', `<${basePath}?${params.toString()}>; rel="next"`);
}

/** `GET /v2/<name>/tags/list` with `n`/`last` and a `Link` to the next page. */
export async function tagsList(repo: Repository, reply: FastifyReply, query: Query): Promise<void> {
  const page = pageQuery(query);
  const result = await repo.tags.list(page);
  if (result === null) throw registryError('NAME_UNKNOWN', { name: repo.name });
  nextLink(reply, `/v2/${repo.name}/tags/list`, page, result.next, repo.namespace);
  await reply.type('application/json').send({ name: repo.name, tags: result.tags });
}
