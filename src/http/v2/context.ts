import type { Authorizer } from '../../auth/authorizer.js';
import type { Config } from '../../config/config.js';
import { registryError } from '../../errors/registry-error.js';
import type { Namespace } from '../../registry/repository.js';
import type { CatalogIndex } from '../../services/catalog/catalog-index.js';
import type { Metrics } from '../metrics.js';

/** The query string of a /v2/ request. */
export type Query = Record<string, string | undefined>;

/** What the handlers of the /v2/ resources share (built once by `registryRoutes`). */
export interface RouteContext {
  config: Config;
  /** The repositories: the domain with its decorators (the routes cannot tell which). */
  namespace: Namespace;
  authorizer: Authorizer;
  metrics?: Metrics;
  /** The catalog index: answers `_catalog` (the domain keeps it up to date). */
  catalog: CatalogIndex;
  /** An absolute `Location` when `http.host` is set, else the path. */
  location(path: string): string;
}

/** UNSUPPORTED for a method the endpoint does not serve. */
export function methodNotAllowed() {
  return registryError('UNSUPPORTED', undefined, { message: 'method not allowed on this endpoint' });
}
