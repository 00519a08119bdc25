import type { FastifyRequest } from 'fastify';
import type { Authorizer } from '../../auth/authorizer.js';
import type { Config } from '../../config/config.js';
import { registryError } from '../../errors/registry-error.js';
import type { Namespace } from '../../registry/repository.js';
import type { CatalogIndex } from '../../services/catalog/catalog-index.js';
import type { RepositoryLocks } from '../../services/catalog/repository-locks.js';
import type { Metrics } from '../metrics.js';

/** The query string of a /v2/ request. */
export type Query = Record<string, string | undefined>;

/** What the handlers of the /v2/ resources share (built once by `registryRoutes`). */
export interface RouteContext {
  config: Config;
  /** The repositories (local, or decorated by the pull-through cache: the routes cannot tell). */
  namespace: Namespace;
  authorizer: Authorizer;
  metrics?: Metrics;
  /** The catalog index: answers `_catalog`, and is told about every push and delete. */
  catalog: CatalogIndex;
  /** Writes into a repository hold its lock shared, so a repository delete never interleaves with them. */
  locks: RepositoryLocks;
  /** An absolute `Location` when `http.host` is set, else the path. */
  location(path: string): string;
  /** Tells the catalog index that `name` changed; a failure is logged, never fails the request that wrote. */
  indexChanged(request: FastifyRequest, name: string, onlyIfNew?: boolean): Promise<void>;
}

/** UNSUPPORTED for a method the endpoint does not serve. */
export function methodNotAllowed() {
  return registryError('UNSUPPORTED', undefined, { message: 'method not allowed on this endpoint' });
}
