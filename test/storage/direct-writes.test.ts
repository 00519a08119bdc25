/**
 * Issue 16: an upload's data file, which nothing reads while a request writes it, is written two blocks at once; a
 * file a reader may follow as it grows (a pull-through fill) one block at a time, in order. Real files, and for the
 * failure case a real ext4 file system (loop-mounted, small enough to fill up).
 */
import t from 'tap';
import type { Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { AlignedBlocks, DIRECT_BLOCK } from '../../src/storage/drivers/direct-writes.js';
import { digestOf } from '../../src/oci/digest.js';
import { tempDir } from '../helpers/ports.js';

async function newDriver(t: Test, pool: AlignedBlocks, root?: string): Promise<{ root: string; driver: FilesystemDriver }> {
  const dir = root ?? (await tempDir(t, 'berth-direct-'));
  const driver = new FilesystemDriver({ rootDirectory: dir, directBlocks: pool });
  t.teardown(() => driver.close());
  return { root: dir, driver };
}

/** Feeds `data` to the writer in uneven chunks, as a socket would. */
async function feed(w: { write(chunk: Buffer): Promise<void> }, data: Buffer): Promise<void> {
  let off = 0;
  for (let i = 0; off < data.length; i++) {
    const n = Math.min(data.length - off, [65536, 1000, 300_000, 4096, 1][i % 5]!);
    await w.write(data.subarray(off, off + n));
    off += n;
  }
}

/**
 * Counts the writes of whole aligned blocks under way at once, across every FileHandle of this process, while `fn`
 * runs (FileHandle.prototype.write wrapped for the duration): the largest count seen.
 */
async function mostBlocksWritingAtOnce(t: Test, fn: () => Promise<void>): Promise<number> {
  const probe: FileHandle = await open(join(await tempDir(t, 'berth-probe-'), 'p'), 'w');
  const proto = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<unknown> };
  await probe.close();
  const original = proto.write;
  let now = 0;
  let most = 0;
  proto.write = function (this: unknown, ...args: unknown[]) {
    const whole = Buffer.isBuffer(args[0]) && args[0].length === DIRECT_BLOCK && args[1] === 0 && args[2] === DIRECT_BLOCK;
    if (!whole) return original.apply(this, args);
    now++;
    most = Math.max(most, now);
    return original.apply(this, args).finally(() => now--);
  };
  try {
    await fn();
  } finally {
    proto.write = original;
  }
  return most;
}

t.test('an upload writer (followed: false) takes three blocks and writes two at once; a followed writer one', async (t) => {
  const pool = new AlignedBlocks(DIRECT_BLOCK, 6);
  const { root, driver } = await newDriver(t, pool);
  const data = randomBytes(9 * DIRECT_BLOCK + 12_345);

  const upload = await driver.writer('/d/upload', undefined, { followed: false });
  const held = pool.take(4);
  t.equal(held, undefined, 'the upload writer holds three of the six blocks');
  const uploadMost = await mostBlocksWritingAtOnce(t, () => feed(upload, data));
  await upload.commit();
  t.equal(uploadMost, 2, 'two blocks were written at once');
  t.equal(digestOf(await readFile(join(root, 'd', 'upload'))).value, digestOf(data).value, 'the file holds exactly the bytes');

  const fill = await driver.writer('/d/fill');
  const spare = pool.take(4);
  t.equal(spare?.length, 4, 'a followed writer holds two blocks');
  pool.give(spare!);
  const fillMost = await mostBlocksWritingAtOnce(t, () => feed(fill, data));
  await fill.commit();
  t.equal(fillMost, 1, 'one block at a time, in order');
  t.equal(digestOf(await readFile(join(root, 'd', 'fill'))).value, digestOf(data).value, 'the file holds exactly the bytes');
  t.equal(pool.take(6)?.length, 6, 'every block is back in the pool');
});

t.test('with only two blocks left in the pool an upload writer writes one block at a time', async (t) => {
  const pool = new AlignedBlocks(DIRECT_BLOCK, 2);
  const { root, driver } = await newDriver(t, pool);
  const data = randomBytes(5 * DIRECT_BLOCK + 7);
  const w = await driver.writer('/d/two', undefined, { followed: false });
  const most = await mostBlocksWritingAtOnce(t, () => feed(w, data));
  await w.commit();
  t.equal(most, 1, 'one at a time with two blocks');
  t.equal(digestOf(await readFile(join(root, 'd', 'two'))).value, digestOf(data).value, 'exact bytes');
});

t.test('an upload writer resumed from its state continues exactly, across blocks, two at once', async (t) => {
  const pool = new AlignedBlocks(DIRECT_BLOCK, 3);
  const { root, driver } = await newDriver(t, pool);
  const data = randomBytes(7 * DIRECT_BLOCK + 999);
  const cut = 3 * DIRECT_BLOCK + 5000;
  const first = await driver.writer('/d/resumed', undefined, { followed: false });
  await feed(first, data.subarray(0, cut));
  const state = await first.close();
  t.equal(state.size, cut, 'the state records every byte written');
  const second = await driver.writer('/d/resumed', state, { followed: false });
  await feed(second, data.subarray(cut));
  await second.commit();
  t.equal(digestOf(await readFile(join(root, 'd', 'resumed'))).value, digestOf(data).value, 'exact bytes after the resume');
});

/** A 16 MiB ext4 file system, loop-mounted; undefined (with the reason) where this machine does not let us. */
function mountSmallExt4(): { dir: string; unmount: () => void } | { reason: string } {
  const base = mkdtempSync(join(tmpdir(), 'berth-ext4-'));
  const image = join(base, 'fs.img');
  const dir = join(base, 'mnt');
  try {
    execFileSync('truncate', ['-s', '16M', image]);
    execFileSync('mkfs.ext4', ['-q', '-F', image], { stdio: 'pipe' });
    execFileSync('mkdir', [dir]);
    execFileSync('mount', ['-o', 'loop', image, dir], { stdio: 'pipe' });
  } catch (err) {
    rmSync(base, { recursive: true, force: true });
    return { reason: `cannot loop-mount an ext4 image here: ${String((err as Error).message).split('\n')[0]}` };
  }
  return {
    dir,
    unmount: () => {
      execFileSync('umount', [dir], { stdio: 'pipe' });
      rmdirSync(dir);
      rmSync(base, { recursive: true, force: true });
    },
  };
}

t.test('a direct write that fails with two in flight: the writer says so, and a writer resumed from the last state writes exactly', async (t) => {
  const mounted = mountSmallExt4();
  if ('reason' in mounted) {
    t.plan(0, mounted.reason);
    return;
  }
  t.teardown(mounted.unmount);
  const pool = new AlignedBlocks(DIRECT_BLOCK, 3);
  const { root, driver } = await newDriver(t, pool, join(mounted.dir, 'root'));
  const head = randomBytes(2 * DIRECT_BLOCK + 100);
  const w = await driver.writer('/d/full', undefined, { followed: false });
  await feed(w, head);
  const state = await w.close();

  // More than the file system holds: some block's write fails (ENOSPC), with the next one possibly under way.
  const more = await driver.writer('/d/full', state, { followed: false });
  const failed = await (async () => {
    try {
      await feed(more, randomBytes(12 * DIRECT_BLOCK));
      await more.close();
      return undefined;
    } catch (err) {
      await more.close().catch(() => undefined);
      return err;
    }
  })();
  t.match(failed, { code: 'ENOSPC' }, 'the failure is reported as the disk gave it');

  const tail = randomBytes(DIRECT_BLOCK + 33);
  const resumed = await driver.writer('/d/full', state, { followed: false });
  await feed(resumed, tail);
  await resumed.commit();
  const onDisk = await readFile(join(root, 'd', 'full'));
  t.equal(onDisk.length, head.length + tail.length, 'what the failed writer left is cut off');
  t.equal(digestOf(onDisk).value, digestOf(Buffer.concat([head, tail])).value, 'exact bytes: the recorded head, then the tail');
  t.equal(pool.take(3)?.length, 3, 'the blocks are back in the pool');
});
