/**
 * Access a request needs, decided in ONE place from the route and method, so no route can skip authorization.
 * Scopes follow the Docker token spec: `repository:<name>:<actions>` and `registry:catalog:*`.
 */
export type Action = 'pull' | 'push' | 'delete' | 'search' | '*';

/** Every action a token scope or claim may carry (`search` only on `registry:catalog`, for `docker search`). */
export const TOKEN_ACTIONS: readonly string[] = ['pull', 'push', 'delete', 'search', '*'];

export interface AccessRecord {
  type: 'repository' | 'registry';
  /** Repository name, or `catalog` for the registry type. */
  name: string;
  actions: Action[];
}

/** The API routes berth serves under `/v2/`. */
export type RouteKind =
  | 'base'
  | 'catalog'
  | 'tags'
  | 'manifest'
  | 'blob'
  | 'upload-start'
  | 'upload'
  | 'referrers'
  /** Docker Hub's v1 search (`GET /v1/search`), what `docker search HOST/term` calls. */
  | 'search'
  /** `/api/v1/repositories` (list), `/api/v1/repositories/<name>` (one, or DELETE the repository). */
  | 'api-repositories'
  | 'api-repository'
  /** `/api/v1/repositories/<name>/tags` and `/tags/<tag>`. */
  | 'api-tags'
  | 'api-tag'
  /** `/api/v1/repositories/<name>/manifests/<tag-or-digest>`. */
  | 'api-manifest'
  /** `/api/v1/usage`. */
  | 'api-usage'
  /** `POST /api/v1/mirror/pull`: a warm-up job of the repositories in `names`. */
  | 'api-mirror-pull'
  /** `GET /api/v1/mirror/pulls/<id>`: a warm-up job's progress (`names`: the repositories it reads). */
  | 'api-mirror-job';

export interface RouteMatch {
  kind: RouteKind;
  /** Repository name (validated against the grammar), absent for `base` and `catalog`. */
  name?: string;
  /** Manifest reference, blob digest, referrers subject or upload id, depending on the kind. */
  param?: string;
  /** The repositories a route of several names acts on (warm-up jobs); empty until known. */
  names?: string[];
}

/**
 * Required access for a request.
 * - GET/HEAD → pull; POST/PUT/PATCH → push and pull; DELETE → delete.
 * - `_catalog` and `/api/v1/usage` → `registry:catalog:*`; `/v2/` and `/api/v1/repositories` → authenticated, no
 *   scope (lists are filtered by pull access); `/v1/search` → `registry:catalog:search`.
 * - `/api/v1/` routes of one repository as `/v2/`: GET → pull, DELETE (a tag, a manifest, the repository) → delete.
 * - A cross-repository mount (`POST ...?mount=&from=`) also needs pull on `from`.
 * - A warm-up (`POST /api/v1/mirror/pull`) makes the server fetch from the upstream and write into the cache
 *   repositories: push (and pull) on each repository named; its progress (`GET /api/v1/mirror/pulls/<id>`): pull on
 *   each. Before the names are known (the body is not read yet), only an authenticated caller.
 */
export function requiredAccess(route: RouteMatch, method: string, query: Record<string, string | undefined>): AccessRecord[] {
  if (route.kind === 'base') return [];
  if (route.kind === 'catalog') return [{ type: 'registry', name: 'catalog', actions: ['*'] }];
  // Docker's daemon asks for `registry:catalog:search` before `GET /v1/search`; results are filtered by pull access.
  if (route.kind === 'search') return [{ type: 'registry', name: 'catalog', actions: ['search'] }];
  // Listings filtered by pull access: any caller the authorizer knows (or anonymous, where rules allow anonymous).
  if (route.kind === 'api-repositories') return [];
  // What gc and du report covers every repository: the catalog right.
  if (route.kind === 'api-usage') return [{ type: 'registry', name: 'catalog', actions: ['*'] }];
  if (route.kind === 'api-mirror-pull' || route.kind === 'api-mirror-job') {
    const actions: Action[] = route.kind === 'api-mirror-pull' ? ['pull', 'push'] : ['pull'];
    return [...new Set(route.names ?? [])].map((name) => ({ type: 'repository', name, actions }));
  }
  const name = route.name;
  if (name === undefined) return [];
  const m = method.toUpperCase();
  const records: AccessRecord[] = [];
  if (m === 'GET' || m === 'HEAD') records.push({ type: 'repository', name, actions: ['pull'] });
  else if (m === 'DELETE') records.push({ type: 'repository', name, actions: ['delete'] });
  else records.push({ type: 'repository', name, actions: ['pull', 'push'] });
  if (route.kind === 'upload-start' && m === 'POST' && query.mount && query.from && query.from !== name) {
    records.push({ type: 'repository', name: query.from, actions: ['pull'] });
  }
  return records;
}

/** Formats access records as a token scope string: `repository:a/b:pull,push registry:catalog:*`. */
export function scopeString(records: AccessRecord[]): string {
  return records.map((r) => `${r.type}:${r.name}:${r.actions.join(',')}`).join(' ');
}

/** At most this many repositories are looked at for one automatic cross-mount. */
const MAX_MOUNT_SOURCES = 16;

/**
 * Where an automatic cross-mount (`POST ...?mount=<digest>` without `from`) may take the blob from: `anywhere` when
 * the authorizer lets whoever it admits do everything (no auth, htpasswd: the principal lists no grants), else only
 * the repositories the caller's credentials grant pull on (a token lists them; at most 16 are tried). A caller must
 * never gain a blob of a repository it may not read.
 */
export function mountSources(principal: { granted?: AccessRecord[] }): 'anywhere' | string[] {
  if (principal.granted === undefined) return 'anywhere';
  const names = principal.granted
    .filter((r) => r.type === 'repository' && (r.actions.includes('pull') || r.actions.includes('*')))
    .map((r) => r.name);
  return [...new Set(names)].slice(0, MAX_MOUNT_SOURCES);
}
