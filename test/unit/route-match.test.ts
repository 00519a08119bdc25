import t from 'tap';
import { matchRoute } from '../../src/http/route-match.js';
import { label, outcome } from '../helpers/table.js';

const D = `sha256:${'b'.repeat(64)}`;

/**
 * Raw request paths (before percent-decoding) to API routes. Names may hold slashes, so routes match from the end;
 * a name that breaks the grammar (including anything percent-encoded) is NAME_INVALID before any path is built.
 */
const rows: Array<[path: string, expected: ReturnType<typeof matchRoute> | { code: string }]> = [
  ['/v2', { kind: 'base' }],
  ['/v2/', { kind: 'base' }],
  ['/v2/_catalog', { kind: 'catalog' }],
  ['/v2/ubuntu/tags/list', { kind: 'tags', name: 'ubuntu' }],
  ['/v2/library/ubuntu/tags/list', { kind: 'tags', name: 'library/ubuntu' }],
  ['/v2/ubuntu/manifests/latest', { kind: 'manifest', name: 'ubuntu', param: 'latest' }],
  [`/v2/a/b/c/manifests/${D}`, { kind: 'manifest', name: 'a/b/c', param: D }],
  ['/v2/ubuntu/manifests/v%31', { kind: 'manifest', name: 'ubuntu', param: 'v1' }], // the reference is decoded
  ['/v2/ubuntu/manifests/not a tag', { kind: 'manifest', name: 'ubuntu', param: 'not a tag' }], // checked later
  ['/v2/ubuntu/blobs/uploads/', { kind: 'upload-start', name: 'ubuntu' }],
  ['/v2/ubuntu/blobs/uploads', { kind: 'upload-start', name: 'ubuntu' }],
  ['/v2/ubuntu/blobs/uploads/0b1c-uuid', { kind: 'upload', name: 'ubuntu', param: '0b1c-uuid' }],
  [`/v2/ubuntu/blobs/${D}`, { kind: 'blob', name: 'ubuntu', param: D }],
  [`/v2/ubuntu/referrers/${D}`, { kind: 'referrers', name: 'ubuntu', param: D }],
  // names that look like route words
  ['/v2/manifests/manifests/x', { kind: 'manifest', name: 'manifests', param: 'x' }],
  ['/v2/blobs/blobs/uploads/', { kind: 'upload-start', name: 'blobs' }],
  ['/v2/tags/tags/list', { kind: 'tags', name: 'tags' }],
  ['/v2/x/manifests/tags/list', { kind: 'tags', name: 'x/manifests' }],
  ['/v2/_catalog/tags/list', { code: 'NAME_INVALID' }],
  // no API route has that shape
  ['/', null],
  ['/v1/ubuntu/manifests/latest', null],
  ['/v3/ubuntu/manifests/latest', null],
  ['/v2x', null],
  ['/v2ubuntu/manifests/latest', null],
  ['/v2/ubuntu', null],
  ['/v2/ubuntu/manifests/', null],
  ['/v2/ubuntu/manifests', null],
  ['/v2/ubuntu/manifests/a/b', null],
  ['/v2/ubuntu/tags/list/', null],
  ['/v2/ubuntu/blobs/', null],
  ['/v2/ubuntu/blobs/uploads/a/b', null],
  ['/v2/ubuntu/referrers/', null],
  ['/v2/_catalog/', null],
  ['/v2//manifests/latest', null], // no name at all: not a route (404), nothing to check
  // bad names: NAME_INVALID, never a storage path
  ['/v2/Ubuntu/manifests/latest', { code: 'NAME_INVALID' }],
  ['/v2/../../etc/manifests/latest', { code: 'NAME_INVALID' }],
  ['/v2/..%2f..%2fetc/manifests/latest', { code: 'NAME_INVALID' }],
  ['/v2/a%2fb/tags/list', { code: 'NAME_INVALID' }],
  ['/v2/a//b/blobs/uploads/', { code: 'NAME_INVALID' }],
  ['/v2/a b/manifests/latest', { code: 'NAME_INVALID' }],
  [`/v2/${'x'.repeat(256)}/tags/list`, { code: 'NAME_INVALID' }],
  ['/v2/ubuntu/manifests/%E0%A4%A', { code: 'NAME_INVALID' }], // malformed percent-encoding
  ['/v2/ubuntu/blobs/uploads/%zz', { code: 'NAME_INVALID' }],
];

t.test('matchRoute', async (t) => {
  for (const [path, expected] of rows) {
    const got = outcome(() => matchRoute(path));
    t.same('code' in got ? got : got.value, expected, label(path));
  }
});
