import type { FastifyReply } from 'fastify';
import type { Principal } from '../../auth/authorizer.js';
import { registryError } from '../../errors/registry-error.js';
import { DEFAULT_PAGE, MAX_PAGE } from '../../services/catalog/catalog-index.js';
import type { Query, RouteContext } from './context.js';

/**
 * `_catalog` from the catalog index, never a storage walk per request: a default page of 100 (as registry:2), at
 * most 1000 (a larger `n` is PAGINATION_NUMBER_INVALID, as Distribution answers above `catalog.maxentries`), and
 * only repositories the caller may pull (registry:2 lists every name to anyone with the catalog scope).
 */
export async function catalog(ctx: RouteContext, principal: Principal, reply: FastifyReply, query: Query): Promise<void> {
  let n = DEFAULT_PAGE;
  if (query.n !== undefined && query.n !== '') {
    if (!/^\d{1,9}$/.test(query.n))
      throw registryError('PAGINATION_NUMBER_INVALID', { n: query.n.slice(0, 20) }, { message: 'n must be a non-negative integer' });
    n = Number(query.n);
    if (n > MAX_PAGE) throw registryError('PAGINATION_NUMBER_INVALID', { n, max: MAX_PAGE }, { message: `n must be at most ${MAX_PAGE}` });
  }
  const last = query.last === undefined || query.last === '' ? undefined : query.last;
  const page = n === 0 ? { entries: [], next: null } : await ctx.catalog.page(last, n, (name) => ctx.authorizer.canPull(principal, name));
  if (page.next !== null) reply.header('Link', `</v2/_catalog?n=${n}&last=${encodeURIComponent(page.next)}>; rel="next"`);
  await reply.type('application/json').send({ repositories: page.entries.map((e) => e.name) });
}
