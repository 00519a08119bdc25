import type { Test } from 'tap';
import type { IndexEntry, RepositoryIndex } from '../../src/services/catalog/repository-index.js';

/** Makes a fresh, empty index. */
export type MakeRepositoryIndex = () => Promise<RepositoryIndex>;

function entry(name: string, overrides: Partial<IndexEntry> = {}): IndexEntry {
  return { name, tagCount: 1, size: 10, lastPush: '2026-12-01T00:00:00.000Z', description: '', stamp: 1000, ...overrides };
}

/**
 * The contract of the catalog index (see `RepositoryIndex`), run against every implementation. Each subtest checks
 * that it leaves the index empty.
 */
export async function repositoryIndexSuite(t: Test, name: string, make: MakeRepositoryIndex): Promise<void> {
  async function open(t: Test): Promise<RepositoryIndex> {
    const index = await make();
    t.teardown(async () => {
      await index.clear();
      if ((await index.count()) !== 0) throw new Error(`${name}: clear() left names behind`);
      await index.close();
    });
    return index;
  }

  await t.test(`${name}: repository index contract`, async (t) => {
    t.test('put, get and replace; fields survive exactly', async (t) => {
      const index = await open(t);
      t.equal(await index.get('a'), null);
      const e = entry('library/a', { description: '<script>alert(1)</script> ☃', lastPush: null, size: 5_000_000_000 });
      await index.put(e);
      t.strictSame(await index.get('library/a'), e);
      await index.put({ ...e, tagCount: 3, stamp: 2000 });
      t.equal((await index.get('library/a'))?.tagCount, 3);
      t.equal(await index.count(), 1, 'replacing does not add a name');
      await index.remove('library/a');
      t.equal(await index.get('library/a'), null);
    });

    t.test('pages are lexical (byte-wise), start after `after` and hold at most n', async (t) => {
      const index = await open(t);
      const names = ['b', 'a/b', 'a-c', 'a', 'A', 'a/b/c', 'z9', 'z10'];
      for (const n of names) await index.put(entry(n));
      const sorted = [...names].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
      t.strictSame(
        (await index.page(undefined, 100)).map((e) => e.name),
        sorted,
      );
      t.strictSame(
        (await index.page(undefined, 3)).map((e) => e.name),
        sorted.slice(0, 3),
      );
      t.strictSame(
        (await index.page('a-c', 2)).map((e) => e.name),
        ['a/b', 'a/b/c'],
      );
      t.strictSame(
        (await index.page('a-b', 1)).map((e) => e.name),
        ['a-c'],
        'after a name that is not there',
      );
      t.strictSame(await index.page('z9', 5), []);
      t.strictSame(await index.page(undefined, 0), []);
    });

    t.test('a stale put or remove does not undo a newer write', async (t) => {
      const index = await open(t);
      await index.put(entry('r', { stamp: 2000, tagCount: 2 }));
      await index.put(entry('r', { stamp: 1500, tagCount: 1 }));
      t.equal((await index.get('r'))?.tagCount, 2, 'older put ignored');
      await index.remove('r', 1999);
      t.ok(await index.get('r'), 'remove of what a walk begun earlier saw is ignored');
      await index.remove('r', 2000);
      t.equal(await index.get('r'), null);
    });

    t.test('paging while names are added and removed stays sorted and never repeats', async (t) => {
      const index = await open(t);
      for (let i = 0; i < 200; i += 2) await index.put(entry(`r${String(i).padStart(3, '0')}`));
      const seen: string[] = [];
      let after: string | undefined;
      let i = 1;
      for (;;) {
        const page = await index.page(after, 7);
        if (page.length === 0) break;
        seen.push(...page.map((e) => e.name));
        after = page[page.length - 1]?.name;
        // Concurrent writers: add an odd name (some before, some after the cursor), remove an even one.
        await index.put(entry(`r${String(i).padStart(3, '0')}`));
        await index.remove(`r${String((i * 37) % 200).padStart(3, '0')}`);
        i += 2;
      }
      t.strictSame(seen, [...seen].sort(), 'sorted');
      t.equal(new Set(seen).size, seen.length, 'no name twice');
    });

    t.test('deleted marker: remembered for its time, then forgotten', async (t) => {
      const index = await open(t);
      t.equal(await index.deletedAt('gone'), null);
      await index.markDeleted('gone', 4242, 60_000);
      t.equal(await index.deletedAt('gone'), 4242);
      t.equal(await index.deletedAt('other'), null);
      await index.markDeleted('brief', 1, 50);
      await new Promise((r) => setTimeout(r, 120));
      t.equal(await index.deletedAt('brief'), null, 'expired');
    });

    t.test('built marker', async (t) => {
      const index = await open(t);
      t.equal(await index.builtAt(), null);
      await index.markBuilt(12345);
      t.equal(await index.builtAt(), 12345);
      await index.clear();
      t.equal(await index.builtAt(), null, 'clear forgets it');
    });
  });
}
