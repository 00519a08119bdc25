import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { HashThreads, type RunningHash } from '../../src/uploads/hash-threads.js';

const KiB = 1024;

function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Feeds `data` in chunks of the cycling `sizes`, waiting whenever the hash asks to; `pauses` marks request ends. */
async function feed(hash: RunningHash, data: Buffer, sizes: number[], pauseEvery = 0): Promise<void> {
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    const n = sizes[i % sizes.length]!;
    const wait = hash.update(data.subarray(at, at + n));
    if (wait) await wait;
    at += n;
    if (pauseEvery > 0 && i % pauseEvery === pauseEvery - 1) hash.pause();
  }
}

const UNEVEN = [1, 4 * KiB - 1, 0, 4 * KiB, 4 * KiB + 1, 333, 13 * KiB];

t.test('a running hash on a worker thread digests exactly the bytes it was given', async (t) => {
  // Small segments and one in flight: many hand-overs, and updates that have to wait for a segment to come back.
  const threads = new HashThreads({ threads: 1, segmentBytes: 4 * KiB, inflight: 1 });
  t.teardown(() => threads.close());
  const sizes = [0, 1, 4 * KiB - 1, 4 * KiB, 4 * KiB + 1, 5 * 4 * KiB + 7, 200 * KiB + 3];
  for (const size of sizes) {
    const data = randomBytes(size);
    const hash = threads.create();
    await feed(hash, data, UNEVEN);
    t.equal(await hash.digest(), sha256Hex(data), `${size} bytes`);
  }
  const data = randomBytes(150 * KiB + 5);
  const paused = threads.create();
  await feed(paused, data, UNEVEN, 3);
  t.equal(await paused.digest(), sha256Hex(data), 'with a pause (the end of a request) every third chunk');
  t.rejects(paused.digest(), /already/, 'a digest is taken once');
});

t.test('hashes sharing a thread do not mix their bytes', async (t) => {
  const threads = new HashThreads({ threads: 1, segmentBytes: 8 * KiB, inflight: 2 });
  t.teardown(() => threads.close());
  const inputs = Array.from({ length: 12 }, (_, i) => randomBytes(64 * KiB + i * 1013));
  const hashes = inputs.map(() => threads.create());
  // Interleaved: every hash gets a chunk in turn, each waiting for its own segment when the thread is busy.
  await Promise.all(inputs.map((data, i) => feed(hashes[i]!, data, [3 * KiB + i, 5 * KiB])));
  const digests = await Promise.all(hashes.map((h) => h.digest()));
  t.same(
    digests,
    inputs.map((d) => sha256Hex(d)),
    'twelve interleaved hashes, twelve right digests',
  );
  // One disposed half-way neither blocks nor changes the others.
  const dropped = threads.create();
  await feed(dropped, randomBytes(40 * KiB), [7 * KiB]);
  dropped.dispose();
  const after = randomBytes(90 * KiB);
  const next = threads.create();
  await feed(next, after, [9 * KiB]);
  t.equal(await next.digest(), sha256Hex(after), 'a hash after a disposed one is right');
});

t.test('a hash whose first request stays under one segment is finished on the calling thread, and stays right', async (t) => {
  const threads = new HashThreads({ threads: 1, segmentBytes: 64 * KiB });
  t.teardown(() => threads.close());
  const small = randomBytes(10 * KiB);
  const big = randomBytes(300 * KiB);
  const hash = threads.create();
  await feed(hash, small, [KiB]);
  hash.pause();
  await feed(hash, big, [16 * KiB]);
  t.equal(await hash.digest(), sha256Hex(Buffer.concat([small, big])), 'small request, then a large one');

  const none = new HashThreads({ threads: 0 });
  const local = none.create();
  await feed(local, big, [16 * KiB]);
  t.equal(await local.digest(), sha256Hex(big), 'threads: 0 hashes on the calling thread');
  t.equal(local.takesChunks, false, 'and takes no chunk memory away (the caller collects its garbage)');
  t.equal(hash.takesChunks, true, 'a hash with a thread does');
});

t.test('when the thread is gone, digests reject (the caller hashes from storage) and updates neither throw nor hang', async (t) => {
  const threads = new HashThreads({ threads: 1, segmentBytes: 4 * KiB, inflight: 1 });
  const hash = threads.create();
  await feed(hash, randomBytes(64 * KiB), [4 * KiB]);
  await threads.close();
  await feed(hash, randomBytes(64 * KiB), [4 * KiB]);
  await t.rejects(hash.digest(), /closed/, 'the digest rejects');
  const fresh = threads.create();
  const data = randomBytes(20 * KiB);
  await feed(fresh, data, [4 * KiB]);
  t.equal(await fresh.digest(), sha256Hex(data), 'a hash made afterwards gets a new thread');
  await threads.close();
});

/** `data` cut into chunks of the cycling `sizes`, each in memory of its own (as Node's HTTP parser hands them out). */
function ownChunks(data: Buffer, sizes: number[]): Buffer[] {
  const chunks: Buffer[] = [];
  for (let at = 0, i = 0; at < data.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, data.length - at);
    const chunk = Buffer.allocUnsafeSlow(n);
    data.copy(chunk, 0, at, at + n);
    chunks.push(chunk);
    at += n;
  }
  return chunks;
}

t.test('chunks handed over go to the thread as they are, in order with copied ones', async (t) => {
  const threads = new HashThreads({ threads: 1, segmentBytes: 16 * KiB, inflight: 1 });
  t.teardown(() => threads.close());
  const data = randomBytes(400 * KiB + 17);
  const chunks = ownChunks(data, [5 * KiB, 9 * KiB + 3, 1, 20 * KiB]);
  const hash = threads.create();
  let handed = 0;
  for (const [i, chunk] of chunks.entries()) {
    // Every third chunk is not handed over (copied into a segment); one in five is a view into a larger buffer,
    // which is copied even when offered.
    const view = i % 5 === 4;
    const piece = view ? Buffer.concat([Buffer.alloc(3), chunk]).subarray(3) : chunk;
    const handOver = i % 3 !== 0;
    const wait = hash.update(piece, handOver);
    if (wait) await wait;
    if (handOver && !view) handed++;
  }
  t.equal(await hash.digest(), sha256Hex(data), 'the digest of all the bytes, in order');
  const emptied = chunks.filter((c, i) => i % 3 !== 0 && i % 5 !== 4 && c.length === 0).length;
  t.equal(emptied, handed, 'every chunk handed over was transferred (its memory is gone from this thread)');
  t.ok(
    chunks.every((c, i) => (i % 3 === 0 ? c.length > 0 : true)),
    'chunks not handed over are left as they were',
  );
});

t.test('chunks handed over in a request under one batch are hashed here and left untouched', async (t) => {
  const threads = new HashThreads({ threads: 1, segmentBytes: 64 * KiB });
  t.teardown(() => threads.close());
  const small = randomBytes(40 * KiB);
  const chunks = ownChunks(small, [16 * KiB]);
  const hash = threads.create();
  for (const chunk of chunks) t.equal(hash.update(chunk, true), undefined, 'no wait');
  hash.pause();
  t.ok(
    chunks.every((c) => c.length === 16 * KiB || c.length === 8 * KiB),
    'not transferred',
  );
  const big = randomBytes(200 * KiB);
  for (const chunk of ownChunks(big, [32 * KiB])) await hash.update(chunk, true);
  t.equal(await hash.digest(), sha256Hex(Buffer.concat([small, big])), 'then on the calling thread for good, and right');

  // Disposing a hash with a batch not yet sent neither throws nor disturbs the next one.
  const dropped = threads.create();
  for (const chunk of ownChunks(randomBytes(40 * KiB), [8 * KiB])) await dropped.update(chunk, true);
  dropped.dispose();
  const after = randomBytes(300 * KiB);
  const next = threads.create();
  for (const chunk of ownChunks(after, [64 * KiB])) await next.update(chunk, true);
  t.equal(await next.digest(), sha256Hex(after), 'a hash after a disposed one is right');
});
