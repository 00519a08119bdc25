import t from 'tap';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import type { FileInfo, WalkOptions } from '../../src/storage/driver.js';
import { RegistryStore } from '../../src/storage/registry-store.js';
import { enumerateRepositories, type RepositoryEntry } from '../../src/storage/repositories.js';
import type { Test } from 'tap';
import { tempDir } from '../helpers/ports.js';
import { createS3Driver } from '../../src/storage/drivers/s3.js';
import { paths } from '../../src/storage/paths.js';
import { s3StorageSection, startS3Server } from '../helpers/s3-server.js';

/** The filesystem driver, counting the entries its walks yield (and failing on a directory listing). */
class CountingDriver extends FilesystemDriver {
  lists = 0;
  override async *walk(path: string, options?: WalkOptions): AsyncGenerator<FileInfo> {
    for await (const e of super.walk(path, options)) {
      this.lists++;
      yield e;
    }
  }
  override async list(): Promise<string[]> {
    throw new Error('the enumerator walks; it does not list');
  }
}

async function tree(t: Test) {
  const root = await tempDir(t, 'berth-repos-');
  const base = join(root, 'docker/registry/v2/repositories');
  for (const dir of [
    'a/_manifests/revisions',
    'a-c/_layers/sha256',
    'a-c/x/_manifests/tags',
    'a/b/_uploads/11111111-1111-4111-8111-111111111111',
    'lib/app/_layers',
    '_hidden/x/_manifests',
    'a/_manifests/tags/not-a-repo/_layers',
    'empty/folder',
    'zz/top/_manifests',
  ]) {
    await mkdir(join(base, dir), { recursive: true });
  }
  return new CountingDriver({ rootDirectory: root });
}

const all = async (it: AsyncIterable<RepositoryEntry>) => {
  const out: RepositoryEntry[] = [];
  for await (const e of it) out.push(e);
  return out;
};

t.test('one rule for what a repository is, in byte-wise lexical order', async (t) => {
  const driver = await tree(t);
  t.same(await all(enumerateRepositories(driver)), [
    { name: 'a', content: true, uploads: false },
    { name: 'a-c', content: true, uploads: false },
    { name: 'a-c/x', content: true, uploads: false },
    { name: 'a/b', content: false, uploads: true },
    { name: 'lib/app', content: true, uploads: false },
    { name: 'zz/top', content: true, uploads: false },
  ]);
  const store = new RegistryStore(driver);
  t.same(await store.listRepositories(), ['a', 'a-c', 'a-c/x', 'lib/app', 'zz/top'], 'the catalog lists those with content');
});

t.test('startAfter skips earlier names; a page stops early', async (t) => {
  const driver = await tree(t);
  const names = async (startAfter: string) => (await all(enumerateRepositories(driver, { startAfter }))).map((e) => e.name);
  t.same(await names('a'), ['a-c', 'a-c/x', 'a/b', 'lib/app', 'zz/top']);
  t.same(await names('a-c'), ['a-c/x', 'a/b', 'lib/app', 'zz/top']);
  t.same(await names('a/b'), ['lib/app', 'zz/top']);
  t.same(await names('lib'), ['lib/app', 'zz/top']);
  t.same(await names('zz/top'), []);

  const store = new RegistryStore(driver);
  driver.lists = 0;
  t.same(await store.catalogPage({}), { names: ['a', 'a-c', 'a-c/x', 'lib/app', 'zz/top'], more: false });
  const whole = driver.lists;
  driver.lists = 0;
  t.same(await store.catalogPage({ n: 2 }), { names: ['a', 'a-c'], more: true });
  t.ok(driver.lists < whole, `the first page of 2 lists fewer directories (${driver.lists}) than the whole walk (${whole})`);
  driver.lists = 0;
  t.same(await store.catalogPage({ n: 1, last: 'lib/app' }), { names: ['zz/top'], more: false });
  t.ok(driver.lists < whole, `a page after lib/app does not list the a* subtrees (${driver.lists} < ${whole})`);
});

t.test('an aborted walk stops', async (t) => {
  const driver = await tree(t);
  const controller = new AbortController();
  controller.abort(new Error('stop'));
  await t.rejects(all(enumerateRepositories(driver, { signal: controller.signal })), /stop/);
});

/** Names where walk order (a folder as `name/`) and name order disagree: `-` and `.` sort before `/`. */
const TRICKY = [
  'a',
  'a-b',
  'a-b/c',
  'a.b',
  'a/0x',
  'a/b',
  'a/b-c',
  'a/b.c/d',
  'a/b/c',
  'a0',
  'a_b',
  'ab',
  'library/foo',
  'library/foo-bar',
  'library/foo-bar/baz',
  'library/foo.x',
  'library/foo/0',
  'library/foo/bar',
  'library/foo2',
  'library/foo__x',
  'z',
];

async function trickyTree(t: Test): Promise<CountingDriver> {
  const root = await tempDir(t, 'berth-repos-tricky-');
  const base = join(root, 'docker/registry/v2/repositories');
  // Reverse order of creation, and every kind of marker folder.
  const markers = ['_manifests/tags', '_layers/sha256', '_uploads/u', '_manifests/revisions'];
  for (const [i, name] of [...TRICKY].reverse().entries()) await mkdir(join(base, name, markers[i % markers.length] as string), { recursive: true });
  return new CountingDriver({ rootDirectory: root });
}

t.test('names come out in byte-wise order where walk order differs (-, . and / around prefixes)', async (t) => {
  const driver = await trickyTree(t);
  const sorted = [...TRICKY].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  t.same(
    (await all(enumerateRepositories(driver))).map((e) => e.name),
    sorted,
    'every name, byte-wise sorted',
  );
  for (const [i, after] of sorted.entries()) {
    t.same(
      (await all(enumerateRepositories(driver, { startAfter: after }))).map((e) => e.name),
      sorted.slice(i + 1),
      `startAfter ${after}`,
    );
  }
  t.same(
    (await all(enumerateRepositories(driver, { startAfter: 'library/foo-' }))).map((e) => e.name),
    sorted.slice(sorted.indexOf('library/foo-bar')),
    'startAfter a name that is not there',
  );
});

t.test('on S3 a catalog page is a few LIST calls and no HEAD', async (t) => {
  // This machine sets AWS_CA_BUNDLE: the SDK must see only what the test passes.
  for (const k of Object.keys(process.env))
    if (k.startsWith('AWS_') && k !== 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED') delete process.env[k];
  // Listing pages of 50 keys, so a page of the catalog crosses listing pages inside skipped `_layers` folders.
  const server = await startS3Server(t, { pageSize: 50 });
  const driver = createS3Driver(s3StorageSection(server), () => {});
  t.teardown(() => driver.close());
  const names: string[] = [];
  const hex = (i: number, j: number) => `${String(i).padStart(4, '0')}${String(j).padStart(4, '0')}`.padEnd(64, 'a');
  for (let i = 0; i < 20; i++) {
    const name = `proj/r${String(i).padStart(2, '0')}`;
    names.push(name);
    const layers = Array.from({ length: 30 }, (_, j) =>
      driver.putContent(`${paths.repository(name)}/_layers/sha256/${hex(i, j)}/link`, Buffer.from(`sha256:${hex(i, j)}`)),
    );
    await Promise.all(layers);
    await driver.putContent(`${paths.repository(name)}/_manifests/revisions/sha256/${hex(i, 99)}/link`, Buffer.from(`sha256:${hex(i, 99)}`));
    await driver.putContent(`${paths.repository(name)}/_manifests/tags/latest/current/link`, Buffer.from(`sha256:${hex(i, 99)}`));
  }
  const store = new RegistryStore(driver);
  const count = async (call: () => Promise<unknown>) => {
    server.requests.length = 0;
    const value = await call();
    const lists = server.requests.filter((r) => r.method === 'GET' && r.query['list-type'] === '2').length;
    const heads = server.requests.filter((r) => r.method === 'HEAD').length;
    return { value, lists, heads, total: server.requests.length };
  };
  const first = await count(() => store.catalogPage({ n: 5 }));
  t.same(first.value, { names: names.slice(0, 5), more: true }, 'the first page of 5');
  t.equal(first.heads, 0, 'no HEAD');
  t.ok(first.lists <= 12, `a few LIST calls for 5 repositories of 32 keys in pages of 50 (${first.lists})`);
  t.equal(first.total, first.lists, 'and nothing else');
  const later = await count(() => store.catalogPage({ n: 5, last: 'proj/r09' }));
  t.same(later.value, { names: names.slice(10, 15), more: true }, 'a page after proj/r09');
  t.equal(later.heads, 0, 'no HEAD');
  t.ok(later.lists <= 12, `a few LIST calls, not a walk from the start (${later.lists})`);
  const whole = await count(() => store.listRepositories());
  t.same(whole.value, names, 'the whole catalog');
  t.equal(whole.heads, 0, 'no HEAD for the whole catalog either');
  t.ok(whole.lists < 20 * 3, `fewer LIST calls than repositories times their folders (${whole.lists})`);
});
