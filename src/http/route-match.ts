import { registryError } from '../errors/registry-error.js';
import { assertName } from '../oci/reference.js';
import type { RouteMatch } from '../auth/access.js';

/**
 * Matches a request path under `/v2/` to an API route.
 *
 * The path is matched RAW (before percent-decoding): a repository name is checked against the name grammar, which
 * has no `%`, so `..%2f` and friends are NAME_INVALID before anything builds a storage path. Names may contain
 * slashes, so routes are matched from the end: `<name>/manifests/<ref>`, `<name>/blobs/uploads/<id>`, ...
 */
const PATTERNS: Array<{ re: RegExp; kind: RouteMatch['kind'] }> = [
  { re: /^(.+)\/tags\/list$/, kind: 'tags' },
  { re: /^(.+)\/manifests\/([^/]+)$/, kind: 'manifest' },
  { re: /^(.+)\/blobs\/uploads\/?$/, kind: 'upload-start' },
  { re: /^(.+)\/blobs\/uploads\/([^/]+)$/, kind: 'upload' },
  { re: /^(.+)\/blobs\/([^/]+)$/, kind: 'blob' },
  { re: /^(.+)\/referrers\/([^/]+)$/, kind: 'referrers' },
];

/** Returns the route for a raw path (`/v2/...`, without query), null when no API route has that shape. */
export function matchRoute(rawPath: string): RouteMatch | null {
  if (!rawPath.startsWith('/v2/') && rawPath !== '/v2') return null;
  const rest = rawPath.slice('/v2/'.length);
  if (rest === '') return { kind: 'base' };
  if (rest === '_catalog') return { kind: 'catalog' };
  for (const { re, kind } of PATTERNS) {
    const m = re.exec(rest);
    if (!m) continue;
    const name = assertName(m[1] as string);
    const param = m[2] === undefined ? undefined : safeDecode(m[2]);
    return param === undefined ? { kind, name } : { kind, name, param };
  }
  return null;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw registryError('NAME_INVALID', undefined, { message: 'malformed percent-encoding in path' });
  }
}
