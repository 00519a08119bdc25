import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Test } from 'tap';
import {
  InvalidOffsetError,
  InvalidPathError,
  PathNotFoundError,
  type FileWriter,
  type StorageDriver,
  type WalkOptions,
  type WriterState,
} from '../../src/storage/driver.js';
import { digestStream, sha256Hex } from '../helpers/digest.js';

/** What a driver factory hands the suite: the driver, and how to release whatever backs it. */
export interface DriverUnderTest {
  driver: StorageDriver;
  /** Called after `driver.close()` when the suite ends (stop servers, remove temp dirs). */
  cleanup?: () => Promise<void>;
}

/** Builds the driver under test; `t` is the suite's own test, for teardown registration. */
export type MakeDriver = (t: Test) => Promise<DriverUnderTest>;

const KiB = 1024;
const MiB = 1024 * KiB;

type ErrorClass = new (...args: never[]) => Error;

/** A subtest body: `p(...parts)` is a path under this subtest's own fresh prefix. */
type Body = (t: Test, driver: StorageDriver, p: (...parts: string[]) => string) => Promise<void>;

/** Reads a (small) stream whole. */
async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

/** Releases whatever a call that should have failed returned anyway. */
async function discard(value: unknown): Promise<void> {
  if (value === null || typeof value !== 'object') return;
  if ('destroy' in value && typeof value.destroy === 'function') (value as { destroy(): void }).destroy();
  if ('cancel' in value && typeof value.cancel === 'function') await (value as FileWriter).cancel().catch(() => {});
}

/**
 * Asserts that `call` returns a promise rejecting with `klass` (a synchronous throw breaks the Promise-returning
 * contract and fails too).
 */
async function expectReject(t: Test, what: string, call: () => Promise<unknown>, klass: ErrorClass): Promise<void> {
  let promise: Promise<unknown>;
  try {
    promise = call();
  } catch (err) {
    t.fail(`${what}: threw synchronously instead of rejecting`, { found: err });
    return;
  }
  try {
    const value = await promise;
    await discard(value);
    t.fail(`${what}: resolved, wanted ${klass.name}`);
  } catch (err) {
    t.ok(err instanceof klass, `${what} rejects with ${klass.name}`, { found: err });
  }
}

/** Every file (not directory) below `dir`, recursively; empty when `dir` does not exist. */
async function filesUnder(driver: StorageDriver, dir: string): Promise<string[]> {
  let children: string[];
  try {
    children = await driver.list(dir);
  } catch (err) {
    if (err instanceof PathNotFoundError) return [];
    throw err;
  }
  const out: string[] = [];
  for (const child of children) {
    const info = await driver.stat(child);
    if (info.isDir) out.push(...(await filesUnder(driver, child)));
    else out.push(child);
  }
  return out;
}

async function deleteIfPresent(driver: StorageDriver, path: string): Promise<void> {
  try {
    await driver.delete(path);
  } catch (err) {
    if (!(err instanceof PathNotFoundError)) throw err;
  }
}

/** Writes `chunks` one by one, checking that `size` counts every byte. */
async function writeChunks(t: Test, writer: FileWriter, chunks: Buffer[]): Promise<void> {
  let expected = writer.size;
  let sizeOk = true;
  for (const chunk of chunks) {
    await writer.write(chunk);
    expected += chunk.length;
    if (writer.size !== expected) sizeOk = false;
  }
  t.ok(sizeOk, `writer.size counts every byte written (${expected})`);
}

/** Cuts `data` into chunks of the cycling `sizes` (0-length chunks included). */
function cut(data: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    const n = sizes[i % sizes.length]!;
    out.push(data.subarray(at, at + n));
    at += n;
  }
  return out;
}

/** Uneven chunk sizes: empty, tiny, odd, around 1 MiB batch and 5 MiB part boundaries. */
const UNEVEN = [0, 1, 7, 4 * KiB, 64 * KiB + 1, 0, MiB + 3, 333, 2 * MiB - 17, 12, 512 * KiB, 5 * MiB + 1];

/** A JSON round trip, as a state stored in Redis between requests would make. */
function viaJson(state: WriterState): WriterState {
  return JSON.parse(JSON.stringify(state)) as WriterState;
}

/**
 * The shared storage-driver contract suite (see the contract in `src/storage/driver.ts`), run by every driver's own
 * test file. Each subtest works under a fresh random prefix, cleans up after itself by deleting what it wrote, and
 * then fails if any file is left under its prefix (so leaked temporary files, multipart parts or cancelled uploads
 * show up as failures); the prefix is removed either way.
 */
export function driverSuite(t: Test, name: string, makeDriver: MakeDriver): Promise<unknown> {
  return t.test(`storage driver contract: ${name}`, async (t) => {
    const { driver, cleanup } = await makeDriver(t);
    t.teardown(async () => {
      await driver.close();
      if (cleanup) await cleanup();
    });

    const sub = (title: string, body: Body) =>
      t.test(title, async (t) => {
        const prefix = `/berth-suite-${randomBytes(8).toString('hex')}`;
        const p = (...parts: string[]) => [prefix, ...parts].join('/');
        let completed = false;
        try {
          await body(t, driver, p);
          completed = true;
        } finally {
          if (completed) {
            t.same(await filesUnder(driver, prefix), [], 'nothing is left under the prefix after the subtest cleaned up');
          }
          await deleteIfPresent(driver, prefix);
        }
      });

    await sub('health resolves', async (t, driver) => {
      await driver.health();
      t.pass('health() resolved');
    });

    await sub('putContent / getContent round trip', async (t, driver, p) => {
      const cases: Array<[string, Buffer]> = [
        ['empty', Buffer.alloc(0)],
        ['small', Buffer.from('sha256:0123456789abcdef')],
        ['one-mib', randomBytes(MiB)],
      ];
      for (const [label, content] of cases) {
        // "Writes a whole small file atomically, creating parents."
        await driver.putContent(p('deep', 'er', label), content);
        const got = await driver.getContent(p('deep', 'er', label));
        t.ok(Buffer.isBuffer(got), `${label}: getContent returns a Buffer`);
        t.equal(got.length, content.length, `${label}: same length`);
        t.equal(sha256Hex(got), sha256Hex(content), `${label}: same bytes`);
        t.equal((await driver.stat(p('deep', 'er', label))).size, content.length, `${label}: stat size`);
      }
      for (const [label] of cases) await driver.delete(p('deep', 'er', label));
    });

    await sub('putContent overwrites the whole file', async (t, driver, p) => {
      const path = p('file');
      await driver.putContent(path, randomBytes(MiB));
      const shorter = Buffer.from('second version');
      await driver.putContent(path, shorter);
      const got = await driver.getContent(path);
      t.equal(got.toString(), 'second version', 'only the new content, no tail of the old one');
      t.equal((await driver.stat(path)).size, shorter.length, 'stat sees the new size');
      await driver.delete(path);
    });

    await sub('missing paths throw PathNotFoundError', async (t, driver, p) => {
      await driver.putContent(p('present'), Buffer.from('x'));
      await expectReject(t, 'getContent(missing file)', () => driver.getContent(p('absent')), PathNotFoundError);
      await expectReject(t, 'getContent(missing dir)', () => driver.getContent(p('nodir', 'f')), PathNotFoundError);
      await expectReject(t, 'stat(missing)', () => driver.stat(p('absent')), PathNotFoundError);
      await expectReject(t, 'reader(missing)', () => driver.reader(p('absent')), PathNotFoundError);
      await expectReject(t, 'reader(missing, offset)', () => driver.reader(p('absent'), 10), PathNotFoundError);
      await expectReject(t, 'list(missing)', () => driver.list(p('nodir')), PathNotFoundError);
      await expectReject(t, 'delete(missing)', () => driver.delete(p('absent')), PathNotFoundError);
      await expectReject(t, 'move(missing, dest)', () => driver.move(p('absent'), p('dest')), PathNotFoundError);
      await expectReject(t, 'stat(never-created prefix)', () => driver.stat(`${p()}-other`), PathNotFoundError);
      await driver.delete(p('present'));
    });

    await sub('stat of a file and of a directory', async (t, driver, p) => {
      const before = Date.now();
      const content = randomBytes(12_345);
      await driver.putContent(p('dir', 'file'), content);
      const after = Date.now();
      const info = await driver.stat(p('dir', 'file'));
      t.equal(info.path, p('dir', 'file'), 'stat reports the path asked for');
      t.equal(info.size, content.length, 'file size');
      t.equal(info.isDir, false, 'a file is not a directory');
      t.ok(info.modTime instanceof Date && !Number.isNaN(info.modTime.getTime()), 'modTime is a valid Date');
      // Backends may keep whole seconds only; allow that plus a little clock skew between test and backend.
      const slack = 5_000;
      t.ok(info.modTime.getTime() >= before - slack && info.modTime.getTime() <= after + slack, 'modTime is the time of the write', {
        modTime: info.modTime.toISOString(),
        before: new Date(before).toISOString(),
      });
      const dir = await driver.stat(p('dir'));
      t.equal(dir.isDir, true, 'a directory with files in it stats as a directory');
      t.equal(dir.path, p('dir'), 'directory stat reports the path asked for');
      await driver.delete(p('dir', 'file'));
    });

    await sub('list returns the full paths of direct children', async (t, driver, p) => {
      for (const f of ['a', 'b', 'sub/c', 'sub/deeper/d', 'sub/deeper/e', 'other/x']) {
        await driver.putContent(p('dir', ...f.split('/')), Buffer.from(f));
      }
      // "Full paths of the direct children of a directory."
      t.same((await driver.list(p('dir'))).sort(), [p('dir', 'a'), p('dir', 'b'), p('dir', 'other'), p('dir', 'sub')]);
      t.same(
        (await driver.list(p('dir', 'sub'))).sort(),
        [p('dir', 'sub', 'c'), p('dir', 'sub', 'deeper')],
        'a nested directory appears once, as one child',
      );
      t.same((await driver.list(p())).sort(), [p('dir')], 'list of the prefix itself');
      t.ok((await driver.list('/')).includes(p()), 'list("/") includes the prefix');
      await expectReject(t, 'list(missing dir)', () => driver.list(p('dir', 'nope')), PathNotFoundError);
      for (const f of ['a', 'b', 'sub/c', 'sub/deeper/d', 'sub/deeper/e', 'other/x']) {
        await driver.delete(p('dir', ...f.split('/')));
      }
    });

    await sub('reader with offset and length', async (t, driver, p) => {
      const path = p('blob');
      const content = randomBytes(200 * KiB + 17);
      await driver.putContent(path, content);
      const size = content.length;
      const cases: Array<[string, number | undefined, number | undefined, Buffer]> = [
        ['whole (defaults)', undefined, undefined, content],
        ['from offset 0, full length', 0, size, content],
        ['from an offset to the end', 70_001, undefined, content.subarray(70_001)],
        ['offset and length', 1_000, 5_000, content.subarray(1_000, 6_000)],
        ['last byte', size - 1, undefined, content.subarray(size - 1)],
        ['zero length', 10, 0, Buffer.alloc(0)],
        ['offset == size gives an empty stream', size, undefined, Buffer.alloc(0)],
      ];
      for (const [label, offset, length, want] of cases) {
        const got = await readAll(await driver.reader(path, offset, length));
        t.equal(got.length, want.length, `${label}: length`);
        t.equal(sha256Hex(got), sha256Hex(want), `${label}: bytes`);
      }
      // "a read offset past the end throws InvalidOffsetError"
      await expectReject(t, 'reader(offset = size + 1)', () => driver.reader(path, size + 1), InvalidOffsetError);
      await expectReject(t, 'reader(offset far past the end)', () => driver.reader(path, size * 10), InvalidOffsetError);
      await expectReject(t, 'reader(negative offset)', () => driver.reader(path, -1), InvalidOffsetError);
      await driver.delete(path);
    });

    await sub('writer: many uneven chunks, then commit', async (t, driver, p) => {
      const path = p('uploads', 'u1', 'data');
      const content = randomBytes(7 * MiB);
      const writer = await driver.writer(path);
      t.equal(writer.size, 0, 'a new writer starts at 0');
      const chunks = cut(content, UNEVEN);
      t.ok(
        chunks.some((c) => c.length === 0),
        'the chunks include empty ones',
      );
      await writeChunks(t, writer, chunks);
      await writer.commit();
      // "After commit the content is readable at the path."
      t.equal((await driver.stat(path)).size, content.length, 'stat size after commit');
      const got = await digestStream(await driver.reader(path));
      t.equal(got.size, content.length, 'reader returns every byte');
      t.equal(got.hex, sha256Hex(content), 'reader returns exactly the bytes written');
      t.equal(sha256Hex(await driver.getContent(path)), sha256Hex(content), 'getContent agrees');
      await driver.delete(path);
    });

    await sub('writer: a new writer truncates existing content', async (t, driver, p) => {
      const path = p('data');
      await driver.putContent(path, randomBytes(64 * KiB));
      const writer = await driver.writer(path);
      await writer.write(Buffer.from('new'));
      await writer.commit();
      t.equal((await driver.getContent(path)).toString(), 'new', 'old bytes are gone');
      await driver.delete(path);
    });

    await sub('writer: close, resume from the state, three times', async (t, driver, p) => {
      const path = p('uploads', 'u2', 'data');
      // Segments sized to straddle batching and multipart boundaries, including a tiny one.
      const segments = [randomBytes(3 * MiB + 1), randomBytes(17), randomBytes(6 * MiB - 5), randomBytes(5)];
      let state: WriterState | undefined;
      let total = 0;
      for (const [i, segment] of segments.entries()) {
        const writer = await driver.writer(path, state);
        t.equal(writer.size, total, `writer ${i + 1} starts at the resumed size`);
        await writeChunks(t, writer, cut(segment, UNEVEN));
        total += segment.length;
        if (i < segments.length - 1) {
          // "Flushes and returns the state from which a later writer (any process) resumes."
          state = viaJson(await writer.close());
          t.equal(state.size, total, `state ${i + 1} records every byte so far`);
        } else {
          await writer.commit();
        }
      }
      const whole = Buffer.concat(segments);
      const got = await digestStream(await driver.reader(path));
      t.equal(got.size, whole.length, 'size of the concatenation');
      t.equal(got.hex, sha256Hex(whole), 'exactly the concatenation of all segments');
      await driver.delete(path);
    });

    await sub('writer: close, commit and cancel right after writes of several parts at once', async (t, driver, p) => {
      // Drivers that upload in the background (S3 sends parts while the next fill) must finish every part first.
      const path = p('uploads', 'u3', 'data');
      const segments = [randomBytes(16 * MiB + 3), randomBytes(11 * MiB - 1), randomBytes(1)];
      let state: WriterState | undefined;
      for (const [i, segment] of segments.entries()) {
        const writer = await driver.writer(path, state);
        await writer.write(segment);
        if (i < segments.length - 1) {
          state = viaJson(await writer.close());
          t.equal(
            state.size,
            segments.slice(0, i + 1).reduce((n, s) => n + s.length, 0),
            `state ${i + 1} records every byte`,
          );
        } else {
          await writer.commit();
        }
      }
      const whole = Buffer.concat(segments);
      const got = await digestStream(await driver.reader(path));
      t.equal(got.size, whole.length, 'size of the concatenation');
      t.equal(got.hex, sha256Hex(whole), 'exactly the concatenation');
      await driver.delete(path);

      const cancelled = p('uploads', 'u4', 'data');
      const w = await driver.writer(cancelled);
      await w.write(randomBytes(12 * MiB));
      await w.cancel();
      await expectReject(t, 'stat after cancelling a writer with parts on their way', () => driver.stat(cancelled), PathNotFoundError);
    });

    await sub('writer: bytes beyond the resumed state are discarded', async (t, driver, p) => {
      const path = p('data');
      const first = randomBytes(2 * MiB + 11);
      const lost = randomBytes(MiB + 7);
      const replacement = randomBytes(300 * KiB + 1);
      const w1 = await driver.writer(path);
      await w1.write(first);
      const s1 = viaJson(await w1.close());
      // A writer that got further, but whose state never reached the session (a crash, a lost response).
      const w2 = await driver.writer(path, s1);
      await w2.write(lost);
      await w2.close();
      // "continues after exactly the bytes that state records (any bytes a crashed writer left beyond them are
      // discarded)"
      const w3 = await driver.writer(path, viaJson(s1));
      t.equal(w3.size, first.length, 'the resumed writer starts at the recorded size');
      await w3.write(replacement);
      await w3.commit();
      const want = Buffer.concat([first, replacement]);
      const got = await digestStream(await driver.reader(path));
      t.equal(got.size, want.length, 'size is recorded bytes + new bytes');
      t.equal(got.hex, sha256Hex(want), 'content is recorded bytes + new bytes');
      await driver.delete(path);
    });

    await sub('writer: cancel removes the data', async (t, driver, p) => {
      const fresh = p('uploads', 'fresh', 'data');
      const w = await driver.writer(fresh);
      await w.write(randomBytes(2 * MiB));
      await w.cancel();
      await expectReject(t, 'stat after cancel of a new writer', () => driver.stat(fresh), PathNotFoundError);

      const resumed = p('uploads', 'resumed', 'data');
      const w1 = await driver.writer(resumed);
      await w1.write(randomBytes(MiB + 5));
      const state = viaJson(await w1.close());
      const w2 = await driver.writer(resumed, state);
      await w2.write(randomBytes(6 * MiB));
      // "Discards everything this writer (and the states it resumed from) wrote."
      await w2.cancel();
      await expectReject(t, 'stat after cancel of a resumed writer', () => driver.stat(resumed), PathNotFoundError);
      await expectReject(t, 'reader after cancel', () => driver.reader(resumed), PathNotFoundError);
      // Nothing is deleted here: the prefix check below proves cancel left nothing behind.
    });

    await sub('readers never see a partial file while putContent replaces it', async (t, driver, p) => {
      const path = p('link');
      const a = randomBytes(256 * KiB);
      const b = randomBytes(256 * KiB);
      const valid = new Set([sha256Hex(a), sha256Hex(b)]);
      await driver.putContent(path, a);
      let done = false;
      let reads = 0;
      const bad: string[] = [];
      const writer = (async () => {
        try {
          for (let i = 0; i < 40; i++) await driver.putContent(path, i % 2 === 0 ? b : a);
        } finally {
          done = true;
        }
      })();
      const readers = Array.from({ length: 4 }, async (_, n) => {
        do {
          // "a reader never sees a half-written file at its final path"
          const got = n % 2 === 0 ? await driver.getContent(path) : await readAll(await driver.reader(path));
          reads++;
          if (!valid.has(sha256Hex(got))) bad.push(`${got.length} bytes, neither version`);
        } while (!done);
      });
      await Promise.all([writer, ...readers]);
      t.comment(`${reads} reads during 40 replacements`);
      t.same(bad, [], 'every read returned one whole version');
      await driver.delete(path);
    });

    await sub('move replaces the destination and removes the source', async (t, driver, p) => {
      const src = p('uploads', 'x', 'data');
      const dest = p('blobs', 'ab', 'abcd', 'data');
      await driver.putContent(src, Buffer.from('new content'));
      await driver.putContent(dest, randomBytes(4 * KiB));
      await driver.move(src, dest);
      t.equal((await driver.getContent(dest)).toString(), 'new content', 'destination has the source content');
      await expectReject(t, 'stat(source) after move', () => driver.stat(src), PathNotFoundError);

      // Moving into a directory that does not exist yet creates it.
      await driver.move(dest, p('fresh', 'dir', 'data'));
      t.equal((await driver.getContent(p('fresh', 'dir', 'data'))).toString(), 'new content', 'moved into a new dir');
      await expectReject(t, 'stat(old destination)', () => driver.stat(dest), PathNotFoundError);

      await driver.putContent(p('keep'), Buffer.from('keep'));
      await expectReject(t, 'move(missing source)', () => driver.move(p('nothing'), p('keep')), PathNotFoundError);
      t.equal((await driver.getContent(p('keep'))).toString(), 'keep', 'a failed move leaves the destination alone');
      await driver.delete(p('keep'));
      await driver.delete(p('fresh', 'dir', 'data'));
    });

    await sub('delete removes a file or a whole tree', async (t, driver, p) => {
      await driver.putContent(p('one'), Buffer.from('1'));
      await driver.putContent(p('two'), Buffer.from('2'));
      await driver.delete(p('one'));
      await expectReject(t, 'stat(deleted file)', () => driver.stat(p('one')), PathNotFoundError);
      t.equal((await driver.getContent(p('two'))).toString(), '2', 'a sibling survives');

      for (const f of ['a', 'b/c', 'b/d/e', 'b/d/f']) await driver.putContent(p('tree', ...f.split('/')), Buffer.from(f));
      await driver.putContent(p('treehouse'), Buffer.from('not in the tree'));
      await driver.delete(p('tree'));
      await expectReject(t, 'stat(deleted tree)', () => driver.stat(p('tree')), PathNotFoundError);
      await expectReject(t, 'stat(file in deleted tree)', () => driver.stat(p('tree', 'b', 'd', 'e')), PathNotFoundError);
      await expectReject(t, 'list(deleted tree)', () => driver.list(p('tree')), PathNotFoundError);
      t.equal((await driver.getContent(p('treehouse'))).toString(), 'not in the tree', 'a sibling sharing the name prefix survives');
      await expectReject(t, 'delete(already deleted)', () => driver.delete(p('one')), PathNotFoundError);
      await driver.delete(p('two'));
      await driver.delete(p('treehouse'));
    });

    await sub('invalid paths are rejected by every method', async (t, driver, p) => {
      const good = p('good');
      await driver.putContent(good, Buffer.from('good'));
      const base = p();
      // Read-only methods get the bare forms too; writing methods only ever get forms under the prefix.
      const bare = ['/../x', '/a/../b', 'a', '/a/', '/a//b', '/a/%2e%2e', '/a/b c', ''];
      const prefixed = [
        `${base}/../x`,
        `${base}/a/../b`,
        base.slice(1),
        `${base.slice(1)}/a`,
        `${base}/a/`,
        `${base}//b`,
        `${base}/a/%2e%2e`,
        `${base}/b c`,
        `${base}/./a`,
        `${base}/a\\b`,
        `${base}/a\u0000b`,
        `${base}/é`,
      ];
      for (const bad of [...bare, ...prefixed]) {
        const q = JSON.stringify(bad);
        await expectReject(t, `getContent(${q})`, () => driver.getContent(bad), InvalidPathError);
        await expectReject(t, `reader(${q})`, () => driver.reader(bad), InvalidPathError);
        await expectReject(t, `stat(${q})`, () => driver.stat(bad), InvalidPathError);
        await expectReject(t, `list(${q})`, () => driver.list(bad), InvalidPathError);
        await expectReject(t, `move(${q}, good)`, () => driver.move(bad, p('moved')), InvalidPathError);
        await expectReject(t, `redirectURL(${q})`, () => driver.redirectURL(bad, { method: 'GET', expiresInSeconds: 60 }), InvalidPathError);
      }
      for (const bad of prefixed) {
        const q = JSON.stringify(bad);
        await expectReject(t, `putContent(${q})`, () => driver.putContent(bad, Buffer.from('x')), InvalidPathError);
        await expectReject(t, `writer(${q})`, () => driver.writer(bad), InvalidPathError);
        await expectReject(t, `writer(${q}, state)`, () => driver.writer(bad, { size: 0 }), InvalidPathError);
        await expectReject(t, `move(good, ${q})`, () => driver.move(good, bad), InvalidPathError);
        await expectReject(t, `delete(${q})`, () => driver.delete(bad), InvalidPathError);
      }
      t.equal((await driver.getContent(good)).toString(), 'good', 'a move to an invalid destination left the source');
      await driver.delete(good);
    });

    await sub('concurrent writers to different paths', async (t, driver, p) => {
      const contents = Array.from({ length: 6 }, (_, i) => randomBytes(MiB + i * 99_991));
      await Promise.all(
        contents.map(async (content, i) => {
          const writer = await driver.writer(p('uploads', `w${i}`, 'data'));
          // Different chunk cycles per writer so the writes interleave unevenly.
          for (const chunk of cut(
            content,
            [...UNEVEN.slice(i), ...UNEVEN.slice(0, i)].map((n) => n % (300 * KiB)),
          )) {
            await writer.write(chunk);
          }
          await writer.commit();
        }),
      );
      for (const [i, content] of contents.entries()) {
        const path = p('uploads', `w${i}`, 'data');
        t.equal(sha256Hex(await driver.getContent(path)), sha256Hex(content), `writer ${i}: exact bytes`);
        await driver.delete(path);
      }
    });

    await sub('walk yields every entry below a path in walk-key order, resuming after startAfter', async (t, driver, p) => {
      const files: Array<[string[], number]> = [
        [['a', '1'], 1],
        [['a-b', 'x'], 2],
        [['a.c'], 3],
        [['a', 'b', 'c'], 4],
        [['a', 'b', 'd'], 5],
        [['a', 'b', 'e', 'f'], 6],
        [['z'], 7],
      ];
      for (const [parts, n] of files) await driver.putContent(p('t', ...parts), Buffer.alloc(n, 1));
      const root = p('t');
      const walk = async (options: WalkOptions = {}) => {
        const out: string[] = [];
        for await (const e of driver.walk(root, options)) out.push(`${e.path.slice(root.length)}${e.isDir ? '/' : `:${e.size}`}`);
        return out;
      };
      // "-" (0x2d) and "." (0x2e) sort before "/" (0x2f): a-b and a.c come before the directory a.
      const whole = ['/a-b/', '/a-b/x:2', '/a.c:3', '/a/', '/a/1:1', '/a/b/', '/a/b/c:4', '/a/b/d:5', '/a/b/e/', '/a/b/e/f:6', '/z:7'];
      t.same(await walk(), whole, 'the whole tree, directories before their contents, files with their sizes');
      t.same(await walk({ startAfter: p('t', 'a', '1') }), whole.slice(5), 'startAfter a file in the middle of a nested tree');
      t.same(await walk({ startAfter: p('t', 'a', 'b', 'c') }), whole.slice(7), 'startAfter a file two levels down');
      t.same(await walk({ startAfter: `${p('t', 'a', 'b')}/` }), whole.slice(6), 'startAfter the walk key of a directory: its contents follow');
      t.same(await walk({ startAfter: p('t', 'a') }), whole, 'startAfter a directory path without its slash: everything from a-b on');
      t.same(await walk({ startAfter: p('t', 'a', 'b', 'e', 'f') }), ['/z:7'], 'startAfter the deepest file');
      t.same(await walk({ startAfter: p('t', 'zz') }), [], 'startAfter past the end');
      t.same(
        await walk({ skip: (d) => d.path.endsWith('/a/b') }),
        ['/a-b/', '/a-b/x:2', '/a.c:3', '/a/', '/a/1:1', '/a/b/', '/z:7'],
        'a skipped directory is yielded, not entered',
      );
      t.same(await walk({ startAfter: p('t', 'a', '1'), skip: (d) => d.path.endsWith('/a/b') }), ['/a/b/', '/z:7'], 'skip with startAfter');
      const sub: string[] = [];
      for await (const e of driver.walk(p('t', 'a', 'b'))) sub.push(e.path.slice(root.length));
      t.same(sub, ['/a/b/c', '/a/b/d', '/a/b/e', '/a/b/e/f'], 'a walk of a subdirectory');
      await expectReject(t, 'walk of a missing path', () => driver.walk(p('missing')).next(), PathNotFoundError);

      const controller = new AbortController();
      const seen: string[] = [];
      let error: unknown;
      try {
        for await (const e of driver.walk(root, { signal: controller.signal })) {
          seen.push(e.path);
          if (seen.length === 2) controller.abort(new Error('walk stopped'));
        }
      } catch (err) {
        error = err;
      }
      t.equal(seen.length, 2, 'an aborted walk yields nothing more');
      t.match(error, { message: 'walk stopped' }, "and rejects with the signal's reason");
      await driver.delete(root);
    });

    await sub('aborting a signal stops list, reader and move', async (t, driver, p) => {
      await driver.putContent(p('d', 'f'), randomBytes(4 * MiB));
      const aborted = AbortSignal.abort(new Error('given up'));
      await t.rejects(driver.list(p('d'), { signal: aborted }), { message: 'given up' }, 'list with an aborted signal');
      await t.rejects(driver.reader(p('d', 'f'), 0, undefined, { signal: aborted }), { message: 'given up' }, 'reader with an aborted signal');
      await t.rejects(driver.move(p('d', 'f'), p('d', 'g'), { signal: aborted }), { message: 'given up' }, 'move with an aborted signal');
      t.equal((await driver.stat(p('d', 'f'))).size, 4 * MiB, 'the aborted move left the source');
      const controller = new AbortController();
      const stream = await driver.reader(p('d', 'f'), 0, undefined, { signal: controller.signal });
      let got = 0;
      await t.rejects(
        (async () => {
          for await (const chunk of stream) {
            got += (chunk as Buffer).length;
            controller.abort(new Error('client left'));
          }
        })(),
        { name: 'AbortError', cause: { message: 'client left' } },
        'a reader stream is destroyed with an AbortError (cause: the reason) when its signal aborts',
      );
      t.ok(got < 4 * MiB, `the stream stopped early (${got} bytes)`);
      t.same(await driver.list(p('d')), [p('d', 'f')], 'list with a live signal');
      await driver.delete(p('d'));
    });

    await sub('a 64 MiB file streams back exactly', async (t, driver, p) => {
      const path = p('blobs', 'big', 'data');
      const size = 64 * MiB;
      const chunk = MiB + 13;
      const written = createHash('sha256');
      const sample = { offset: 40 * MiB + 5, length: 3 * MiB, hash: createHash('sha256') };
      const writer = await driver.writer(path);
      for (let at = 0; at < size; at += chunk) {
        const piece = randomBytes(Math.min(chunk, size - at));
        written.update(piece);
        // Keep the hash of one range as it goes by, to check a ranged read without holding the file.
        const from = Math.max(sample.offset, at);
        const to = Math.min(sample.offset + sample.length, at + piece.length);
        if (from < to) sample.hash.update(piece.subarray(from - at, to - at));
        await writer.write(piece);
      }
      t.equal(writer.size, size, 'writer.size after the last write');
      await writer.commit();
      t.equal((await driver.stat(path)).size, size, 'stat size');
      const got = await digestStream(await driver.reader(path));
      t.equal(got.size, size, 'streamed size');
      t.equal(got.hex, written.digest('hex'), 'streamed sha256');
      const range = await digestStream(await driver.reader(path, sample.offset, sample.length));
      t.equal(range.size, sample.length, 'ranged read size');
      t.equal(range.hex, sample.hash.digest('hex'), 'ranged read sha256');
      await driver.delete(path);
    });
  });
}
