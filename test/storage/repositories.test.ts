import t from 'tap';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import type { FileInfo, WalkOptions } from '../../src/storage/driver.js';
import { RegistryStore } from '../../src/storage/registry-store.js';
import { enumerateRepositories, type RepositoryEntry } from '../../src/storage/repositories.js';
import type { Test } from 'tap';
import { tempDir } from '../helpers/ports.js';

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
  t.same((await all(enumerateRepositories(driver))).map((e) => e.name), sorted, 'every name, byte-wise sorted');
  for (const [i, after] of sorted.entries()) {
    t.same((await all(enumerateRepositories(driver, { startAfter: after }))).map((e) => e.name), sorted.slice(i + 1), `startAfter ${after}`);
  }
  t.same((await all(enumerateRepositories(driver, { startAfter: 'library/foo-' }))).map((e) => e.name), sorted.slice(sorted.indexOf('library/foo-bar')), 'startAfter a name that is not there');
});
