import t from 'tap';
import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, readlink, stat, symlink, writeFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { basename, join } from 'node:path';
import { InvalidPathError, PathNotFoundError, type StorageDriver } from '../../src/storage/driver.js';
import { FilesystemDriver, type FilesystemDriverOptions } from '../../src/storage/drivers/filesystem.js';
import { AlignedBlocks, DIRECT_BLOCK, O_DIRECT } from '../../src/storage/drivers/direct-writes.js';
import { paths } from '../../src/storage/paths.js';
import { digestOf } from '../../src/oci/digest.js';
import { tempDir } from '../helpers/ports.js';
import { driverSuite } from '../suites/driver-suite.js';

const run = promisify(execFile);

async function newDriver(t: Test, options: Omit<FilesystemDriverOptions, 'rootDirectory'> = {}): Promise<{ root: string; driver: FilesystemDriver }> {
  const root = await tempDir(t, 'berth-fs-driver-');
  const driver = new FilesystemDriver({ rootDirectory: root, ...options });
  t.teardown(() => driver.close());
  return { root, driver };
}

/** Every host file and directory below `dir`, as paths relative to it. */
async function onDisk(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).sort();
}

/** Asserts the call rejects with `klass`. */
async function rejectsWith(t: Test, what: string, call: () => Promise<unknown>, klass: new (...a: never[]) => Error) {
  try {
    await call();
    t.fail(`${what}: resolved, wanted ${klass.name}`);
  } catch (err) {
    t.ok(err instanceof klass, `${what} rejects with ${klass.name}`, { found: err });
  }
}

driverSuite(t, 'filesystem', async (t) => {
  const root = await tempDir(t, 'berth-fs-suite-');
  return { driver: new FilesystemDriver({ rootDirectory: root }) };
});

driverSuite(t, 'filesystem, directwrites: false', async (t) => {
  const root = await tempDir(t, 'berth-fs-suite-');
  return { driver: new FilesystemDriver({ rootDirectory: root, directWrites: false }) };
});

/** Blocks that O_DIRECT refuses (an odd address): every direct write fails with EINVAL, as on a file system without it. */
class MisalignedBlocks extends AlignedBlocks {
  constructor() {
    super(DIRECT_BLOCK, 1000);
  }
  override take(n: number): Buffer[] {
    return Array.from({ length: n }, () => Buffer.alloc(DIRECT_BLOCK + 1).subarray(1));
  }
  override give(): void {}
}

driverSuite(t, 'filesystem, O_DIRECT refused at the first write', async (t) => {
  const root = await tempDir(t, 'berth-fs-suite-');
  return { driver: new FilesystemDriver({ rootDirectory: root, directBlocks: new MisalignedBlocks() }) };
});

t.test('files live at <root>/<path>, exactly as registry:2 lays them out', async (t) => {
  const { root, driver } = await newDriver(t);
  const blob = randomBytes(300 * 1024);
  const d = digestOf(blob);
  const link = paths.layerLink('library/alpine', d);

  await driver.putContent(link, Buffer.from(d.value));
  t.equal(
    await readFile(join(root, 'docker/registry/v2/repositories/library/alpine/_layers/sha256', d.hex, 'link'), 'utf8'),
    d.value,
    'a link is the plain digest string at its registry:2 host path',
  );

  const upload = paths.uploadData('library/alpine', 'e9f3c0a1-0000-4000-8000-000000000001');
  const w = await driver.writer(upload);
  await w.write(blob.subarray(0, 1000));
  await w.write(blob.subarray(1000));
  await w.commit();
  await driver.move(upload, paths.blobData(d));
  const onHost = await readFile(join(root, 'docker/registry/v2/blobs/sha256', d.hex.slice(0, 2), d.hex, 'data'));
  t.ok(onHost.equals(blob), 'a blob is its raw bytes at blobs/sha256/<hex[0:2]>/<hex>/data');

  // The other direction: what registry:2 wrote on disk is what berth reads.
  const tagLink = join(root, 'docker/registry/v2/repositories/library/alpine/_manifests/tags/3.20/current/link');
  await mkdir(join(tagLink, '..'), { recursive: true });
  await writeFile(tagLink, d.value);
  t.equal(
    (await driver.getContent(paths.tagCurrentLink('library/alpine', '3.20'))).toString(),
    d.value,
    'a file written on the host is read at its driver path',
  );
  t.same(await driver.list(paths.tagsDir('library/alpine')), [paths.tagDir('library/alpine', '3.20')], 'and listed there');
});

t.test('putContent leaves no temporary files behind', async (t) => {
  const { root, driver } = await newDriver(t);
  const path = '/docker/registry/v2/repositories/r/_manifests/tags/latest/current/link';
  await Promise.all(Array.from({ length: 20 }, (_, i) => driver.putContent(path, Buffer.from(`version ${i}`))));
  await driver.putContent('/docker/registry/v2/repositories/r/_manifests/tags/latest/current/link', Buffer.from('x'));
  const dir = join(root, 'docker/registry/v2/repositories/r/_manifests/tags/latest/current');
  t.same(await readdir(dir), ['link'], 'only the file itself after concurrent writes');

  // A write that fails (the target is a directory) cleans up its temporary file too.
  await mkdir(join(root, 'occupied', 'by-a-dir'), { recursive: true });
  await t.rejects(driver.putContent('/occupied/by-a-dir', Buffer.from('x')), 'writing over a directory fails');
  t.same(await onDisk(join(root, 'occupied')), ['by-a-dir'], 'and leaves no temporary file');
});

t.test('list hides temporary files but not real files with similar names', async (t) => {
  const { root, driver } = await newDriver(t);
  await driver.putContent('/d/a.tmp-b', Buffer.from('a real file whose name contains .tmp-'));
  // What a process killed between write and rename leaves: never a valid driver name.
  await writeFile(join(root, 'd', 'link.tmp-0123456789ab~'), 'partial');
  t.same(await driver.list('/d'), ['/d/a.tmp-b'], 'the real file is listed, the stale temporary file is not');
});

t.test('paths cannot escape the root', async (t) => {
  const { root, driver } = await newDriver(t);
  const outside = await tempDir(t, 'berth-fs-outside-');
  await writeFile(join(outside, 'secret'), 'outside the root');
  const escapes = [
    `/../${basename(outside)}/secret`,
    `/docker/../../${basename(outside)}/secret`,
    `/%2e%2e/${basename(outside)}/secret`,
    `/..%2f${basename(outside)}%2fsecret`,
    `\\..\\${basename(outside)}\\secret`,
    join(outside, 'secret').replace(/^\/?/, '//'),
  ];
  for (const path of escapes) {
    await rejectsWith(t, `getContent(${JSON.stringify(path)})`, () => driver.getContent(path), InvalidPathError);
    await rejectsWith(t, `putContent(${JSON.stringify(path)})`, () => driver.putContent(path, Buffer.from('x')), InvalidPathError);
  }
  t.equal(await readFile(join(outside, 'secret'), 'utf8'), 'outside the root', 'the outside file is untouched');
  t.same(await onDisk(outside), ['secret'], 'nothing was written outside');
  t.same(await onDisk(root), [], 'nothing was written inside either');
});

t.test('symlinks inside the root cannot reach outside it', async (t) => {
  const { root, driver } = await newDriver(t);
  const outside = await tempDir(t, 'berth-fs-outside-');
  await writeFile(join(outside, 'secret'), 'outside the root');
  // Someone with host access planted these; nothing reachable over HTTP can create a symlink.
  await symlink(outside, join(root, 'dirlink'));
  await symlink(join(outside, 'secret'), join(root, 'filelink'));

  const reads: Array<[string, (d: StorageDriver) => Promise<unknown>]> = [
    ['getContent(/dirlink/secret)', (d) => d.getContent('/dirlink/secret')],
    ['getContent(/filelink)', (d) => d.getContent('/filelink')],
    ['reader(/dirlink/secret)', (d) => d.reader('/dirlink/secret')],
    ['reader(/filelink)', (d) => d.reader('/filelink')],
    ['stat(/dirlink/secret)', (d) => d.stat('/dirlink/secret')],
    ['stat(/filelink)', (d) => d.stat('/filelink')],
    ['list(/dirlink)', (d) => d.list('/dirlink')],
    ['putContent(/dirlink/planted)', (d) => d.putContent('/dirlink/planted', Buffer.from('x'))],
    ['putContent(/dirlink/new/dir/planted)', (d) => d.putContent('/dirlink/new/dir/planted', Buffer.from('x'))],
    ['writer(/dirlink/planted)', (d) => d.writer('/dirlink/planted')],
    ['writer(/filelink)', (d) => d.writer('/filelink')],
    ['writer(/filelink, state)', (d) => d.writer('/filelink', { size: 0 })],
    ['move(/dirlink/secret, /stolen)', (d) => d.move('/dirlink/secret', '/stolen')],
    [
      'move(/stolen-src, /dirlink/planted)',
      async (d) => {
        await d.putContent('/stolen-src', Buffer.from('x'));
        return d.move('/stolen-src', '/dirlink/planted');
      },
    ],
    ['delete(/dirlink/secret)', (d) => d.delete('/dirlink/secret')],
  ];
  for (const [what, call] of reads) await rejectsWith(t, what, () => call(driver), InvalidPathError);

  t.equal(await readFile(join(outside, 'secret'), 'utf8'), 'outside the root', 'the outside file is untouched');
  t.same(await onDisk(outside), ['secret'], 'nothing was created, moved or deleted outside');

  // Deleting a link removes the link, not what it points at.
  await driver.delete('/dirlink');
  await driver.delete('/filelink');
  t.same(await onDisk(outside), ['secret'], 'deleting the links left their targets alone');
  await rejectsWith(t, 'stat(deleted link)', () => driver.stat('/dirlink'), PathNotFoundError);
});

t.test('symlinks that stay inside the root keep working', async (t) => {
  const { root, driver } = await newDriver(t);
  await driver.putContent('/real/dir/file', Buffer.from('inside'));
  await symlink(join(root, 'real'), join(root, 'alias'));
  t.equal((await driver.getContent('/alias/dir/file')).toString(), 'inside', 'read through an inside symlink');
  await driver.putContent('/alias/dir/other', Buffer.from('more'));
  t.equal((await driver.getContent('/real/dir/other')).toString(), 'more', 'write through an inside symlink');
});

t.test('the root itself may be reached through a symlink', async (t) => {
  const real = await tempDir(t, 'berth-fs-real-');
  const links = await tempDir(t, 'berth-fs-links-');
  await symlink(real, join(links, 'root'));
  const driver = new FilesystemDriver({ rootDirectory: join(links, 'root', 'not-yet-created') });
  t.teardown(() => driver.close());
  await driver.health();
  await driver.putContent('/a/b', Buffer.from('via a symlinked root'));
  const w = await driver.writer('/a/c');
  await w.write(Buffer.from('written'));
  const state = await w.close();
  const w2 = await driver.writer('/a/c', state);
  await w2.write(Buffer.from(' and resumed'));
  await w2.commit();
  await driver.move('/a/c', '/a/d');
  t.same((await driver.list('/a')).sort(), ['/a/b', '/a/d'], 'list');
  t.equal((await driver.getContent('/a/d')).toString(), 'written and resumed', 'writer, resume and move');
  t.equal(await readFile(join(real, 'not-yet-created', 'a', 'b'), 'utf8'), 'via a symlinked root', 'on the real disk');
  await driver.delete('/a');
  t.same(await onDisk(join(real, 'not-yet-created')), [], 'delete of a tree');
});

t.test('move renames a directory with what it holds to a path where nothing is', async (t) => {
  const { root, driver } = await newDriver(t);
  await driver.putContent('/r/_uploads/old/startedat', Buffer.from('t'));
  await driver.move('/r/_uploads/old', '/r/_uploads/new');
  t.same(await driver.list('/r/_uploads'), ['/r/_uploads/new']);
  t.equal(await readFile(join(root, 'r', '_uploads', 'new', 'startedat'), 'utf8'), 't');
  await t.rejects(driver.move('/r/_uploads/old', '/r/_uploads/again'), { name: 'PathNotFoundError' }, 'a source that is gone');
});

t.test('a resumed writer truncates what a crashed writer appended on disk', async (t) => {
  const { root, driver } = await newDriver(t);
  const w = await driver.writer('/u/data');
  await w.write(Buffer.from('recorded'));
  const state = await w.close();
  // A crashed process appended bytes it never reported.
  await writeFile(join(root, 'u', 'data'), 'recorded-and-lost');
  const w2 = await driver.writer('/u/data', state);
  t.equal((await stat(join(root, 'u', 'data'))).size, 'recorded'.length, 'the host file is cut back on resume');
  await w2.write(Buffer.from('+next'));
  await w2.commit();
  t.equal(await readFile(join(root, 'u', 'data'), 'utf8'), 'recorded+next', 'exact content on disk');
});

/** Bytes of `file` in the page cache (util-linux `fincore`). */
async function cachedBytes(file: string): Promise<number> {
  const { stdout } = await run('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]);
  return Number(stdout.trim());
}

/** Whether this file system takes an O_DIRECT write at all (from page-aligned memory). */
async function takesODirect(dir: string): Promise<boolean> {
  if (O_DIRECT === undefined) return false;
  const [block] = new AlignedBlocks(DIRECT_BLOCK, 1).take(1)!;
  try {
    const h = await open(join(dir, 'probe'), constants.O_WRONLY | constants.O_CREAT | O_DIRECT);
    try {
      await h.write(block!, 0, 4096, 0);
      return true;
    } finally {
      await h.close();
    }
  } catch {
    return false;
  }
}

t.test(
  'blob data is written around the page cache where the file system allows, else through it',
  { skip: process.platform !== 'linux' && 'Linux only' },
  async (t) => {
    const probeDir = await tempDir(t, 'berth-fs-probe-');
    const direct = await takesODirect(probeDir);
    const data = randomBytes(8 * 1024 * 1024 + 100);
    /** Writes `data` in 64 KiB chunks, as a request body arrives; the bytes of the file in the page cache after. */
    const write = async (driver: FilesystemDriver, root: string): Promise<number> => {
      const path = paths.uploadData('cache/me', 'e9f3c0a1-0000-4000-8000-00000000000c');
      const w = await driver.writer(path);
      for (let at = 0; at < data.length; at += 65536) await w.write(data.subarray(at, at + 65536));
      await w.commit();
      const file = join(root, 'docker/registry/v2/repositories/cache/me/_uploads/e9f3c0a1-0000-4000-8000-00000000000c/data');
      const cached = await cachedBytes(file);
      t.equal(digestOf(await readFile(file)).value, digestOf(data).value, 'the file holds exactly the bytes written');
      return cached;
    };

    const refused: unknown[] = [];
    const { root, driver } = await newDriver(t, { onDirectWritesRefused: (err) => refused.push(err) });
    const cached = await write(driver, root);
    if (direct) {
      t.ok(cached <= 4096, 'direct writes: at most the last partial page is in the page cache', { cached });
      t.equal(driver.writesDirect, true, 'still writing direct');
      t.same(refused, [], 'nothing refused');
    } else {
      t.ok(driver.writesDirect === false && refused.length === 1, 'this file system refuses O_DIRECT: told once, page cache from then on');
    }

    const buffered = await newDriver(t, { directWrites: false });
    const bufferedCached = await write(buffered.driver, buffered.root);
    t.ok(bufferedCached >= data.length / 2, 'directwrites: false: the bytes went through the page cache', { bufferedCached });

    const misaligned: unknown[] = [];
    const refusing = await newDriver(t, { directBlocks: new MisalignedBlocks(), onDirectWritesRefused: (err) => misaligned.push(err) });
    await write(refusing.driver, refusing.root);
    await write(refusing.driver, refusing.root);
    t.equal(misaligned.length, 1, 'a refused direct write is reported once, whatever follows');
    if (direct) t.match(misaligned[0], { code: 'EINVAL' }, 'with the error the kernel gave');
    t.equal(refusing.driver.writesDirect, false, 'later writers go through the page cache');
  },
);

t.test('when aligned memory cannot be had, writers write through the page cache', async (t) => {
  class NoMemory extends AlignedBlocks {
    tries = 0;
    protected override allocate(): ArrayBuffer {
      this.tries++;
      throw new RangeError('WebAssembly.Memory(): could not allocate memory');
    }
  }
  const pool = new NoMemory(DIRECT_BLOCK, 48);
  const { root, driver } = await newDriver(t, { directBlocks: pool });
  const data = randomBytes(3 * 1024 * 1024 + 1);
  for (const name of ['a', 'b']) {
    const w = await driver.writer(`/nomem/${name}`);
    await w.write(data);
    await w.commit();
    t.equal(digestOf(await readFile(join(root, 'nomem', name))).value, digestOf(data).value, `writer ${name} wrote its bytes`);
  }
  t.equal(pool.tries, 1, 'the allocation is tried once, not per writer');
});

t.test('writers beyond the pool of aligned blocks write through the page cache; blocks return to the pool', async (t) => {
  const pool = new AlignedBlocks(DIRECT_BLOCK, 2);
  const { root, driver } = await newDriver(t, { directBlocks: pool });
  const a = randomBytes(5 * 1024 * 1024 + 5);
  const b = randomBytes(2 * 1024 * 1024 + 9);
  const wa = await driver.writer('/pool/a');
  const wb = await driver.writer('/pool/b');
  t.same(pool.take(1), undefined, 'the first writer holds both blocks');
  await Promise.all([wa.write(a), wb.write(b)]);
  await Promise.all([wa.commit(), wb.commit()]);
  t.equal(digestOf(await readFile(join(root, 'pool/a'))).value, digestOf(a).value, 'the direct writer wrote its bytes');
  t.equal(digestOf(await readFile(join(root, 'pool/b'))).value, digestOf(b).value, 'the page-cache writer wrote its bytes');
  const back = pool.take(2);
  t.equal(back?.length, 2, 'after commit the blocks are back in the pool');
  pool.give(back!);
  const wc = await driver.writer('/pool/c');
  await wc.write(a);
  await wc.cancel();
  t.equal(pool.take(2)?.length, 2, 'after cancel too');
});

t.test(
  'a writer opens its O_DIRECT descriptor only once a block is full',
  { skip: process.platform !== 'linux' && 'reads /proc/self/fd' },
  async (t) => {
    const { root, driver } = await newDriver(t);
    const file = join(root, 'lazy', 'data');
    /** How many descriptors of this process have `file` open. */
    const opened = async (): Promise<number> => {
      let n = 0;
      for (const fd of await readdir('/proc/self/fd')) if ((await readlink(`/proc/self/fd/${fd}`).catch(() => '')) === file) n++;
      return n;
    };
    const w = await driver.writer('/lazy/data');
    await w.write(randomBytes(64 * 1024));
    t.equal(await opened(), 1, 'a small upload: one descriptor, as a buffered writer has');
    // Two full blocks: the second waits for the first one's write, which opened the descriptor.
    await w.write(randomBytes(2 * DIRECT_BLOCK));
    t.equal(await opened(), driver.writesDirect ? 2 : 1, 'past a block: the O_DIRECT one too (where the file system takes it)');
    await w.commit();
    t.equal(await opened(), 0, 'both closed at commit');
  },
);
