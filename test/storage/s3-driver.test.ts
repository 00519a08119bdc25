import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import t, { type Test } from 'tap';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { BackendUnavailableError } from '../../src/errors/registry-error.js';
import { PathNotFoundError, type WriterState } from '../../src/storage/driver.js';
import { createS3Driver, S3Driver, S3Writer, type S3WriterState } from '../../src/storage/drivers/s3.js';
import type { RawSection } from '../../src/config/fields.js';
import { driverSuite } from '../suites/driver-suite.js';
import { s3Op, startFaultProxy, type FaultProxy, type ProxiedRequest } from '../helpers/fault-proxy.js';
import { s3StorageSection, startS3Server, type RecordedRequest, type S3Server } from '../helpers/s3-server.js';
import { sha256Hex } from '../helpers/digest.js';

// This machine sets AWS_CA_BUNDLE (and a developer's shell may set more): the SDK must see only what tests pass.
for (const k of Object.keys(process.env)) if (k.startsWith('AWS_') && k !== 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED') delete process.env[k];

const MiB = 1024 * 1024;

// The cases run two at a time: each has its own S3 server (and fault proxy), and the fault cases mostly wait out the
// SDK's retry back-off.
t.jobs = 2;

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function viaJson(state: WriterState): S3WriterState {
  return JSON.parse(JSON.stringify(state)) as S3WriterState;
}

/** The raw `storage.s3` section for a server (optionally through a proxy endpoint). */
function rawConfig(server: S3Server, extra: RawSection = {}, endpoint = server.endpoint): RawSection {
  return { ...s3StorageSection(server, endpoint), chunksize: 5 * MiB, ...extra };
}

/** A driver on a fresh bucket; closed at teardown. */
function driverFor(t: Test, server: S3Server, extra: RawSection = {}, endpoint?: string): S3Driver {
  const warnings: string[] = [];
  const driver = createS3Driver(rawConfig(server, extra, endpoint), (m) => warnings.push(m));
  t.teardown(() => driver.close());
  return driver;
}

/** Fault tests want quick give-ups, not the production 5 attempts with long back-off. */
async function withProxy(t: Test, extra: RawSection = {}): Promise<{ server: S3Server; proxy: FaultProxy; driver: S3Driver }> {
  const server = await startS3Server(t);
  const proxy = await startFaultProxy(t, server.endpoint);
  const driver = driverFor(t, server, { maxattempts: 3, ...extra }, proxy.endpoint);
  return { server, proxy, driver };
}

const tailKeys = (server: S3Server) => server.keys().filter((k) => k.includes('.berth-tail-'));

t.test('shared driver suite against the strict S3 server', async (t) => {
  let server: S3Server | undefined;
  await driverSuite(t, 's3 (strict S3 server, 5 MiB parts, paged listings)', async (st) => {
    // Listing pages of 4 entries make every list/delete/stat walk continuation tokens.
    server = await startS3Server(st, { pageSize: 4 });
    return { driver: createS3Driver(rawConfig(server, { rootdirectory: '/suite/root/' }), () => {}) };
  });
  // The suite's own leak check lists through the driver, which hides tails: look at the bucket itself too.
  t.same(server?.uploads(), [], 'no multipart upload is left in progress');
  t.same(server?.keys(), [], 'no object (tail side objects included) is left in the bucket');
});

t.test("keys use Distribution's layout: rootdirectory + path", async (t) => {
  const server = await startS3Server(t);
  const rooted = driverFor(t, server, { rootdirectory: '/registry/' });
  await rooted.putContent('/docker/registry/v2/repositories/a/_layers/x/link', Buffer.from('sha256:abc'));
  t.ok(server.keys().includes('registry/docker/registry/v2/repositories/a/_layers/x/link'), 'object key is root + path, no leading slash');

  const bare = driverFor(t, server, {});
  await bare.putContent('/docker/registry/v2/x', Buffer.from('1'));
  t.ok(server.keys().includes('docker/registry/v2/x'), 'without rootdirectory the key is the path without its leading slash');

  // A bucket registry:2 filled: write with a plain SDK client, read through the driver.
  const client = new S3Client({
    region: server.region,
    endpoint: server.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKey, secretAccessKey: server.secretKey },
  });
  t.teardown(() => client.destroy());
  const blob = randomBytes(1000);
  await client.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'registry/docker/registry/v2/blobs/sha256/ab/abcd/data', Body: blob }));
  t.equal(sha256Hex(await rooted.getContent('/docker/registry/v2/blobs/sha256/ab/abcd/data')), sha256Hex(blob), 'reads what another registry wrote');
  t.same(await rooted.list('/docker/registry/v2/blobs/sha256'), ['/docker/registry/v2/blobs/sha256/ab'], 'lists it as a directory');
});

t.test('an upload resumed by other processes, with tails under 5 MiB between requests', async (t) => {
  const server = await startS3Server(t);
  const path = '/docker/registry/v2/repositories/r/_uploads/u1/data';
  // PATCH-sized pieces, none reaching a part on its own, plus a big one and a tiny last one.
  const pieces = [1.5, 1.5, 1.5, 1.5, 0.25, 12, 3, 0.001].map((m) => randomBytes(Math.round(m * MiB)));
  let state: S3WriterState | undefined;
  for (const [i, piece] of pieces.entries()) {
    // Every request in a new driver: nothing but the JSON state carries over, as with another berth process.
    const driver = driverFor(t, server);
    const writer = await driver.writer(path, state);
    await writer.write(piece);
    state = viaJson(await writer.close());
    await driver.close();
    const total = pieces.slice(0, i + 1).reduce((n, p) => n + p.length, 0);
    t.equal(state.size, total, `request ${i + 1}: state records every byte`);
    t.ok((state.tail?.size ?? 0) < 5 * MiB, `request ${i + 1}: the tail kept between requests is under 5 MiB (${state.tail?.size ?? 0})`);
    t.ok(
      state.parts.every((p) => p.size >= 5 * MiB),
      `request ${i + 1}: every recorded part is at least 5 MiB`,
    );
    t.ok(tailKeys(server).length <= 2, `request ${i + 1}: old tails are cleaned up as the upload goes (${tailKeys(server).length} left)`);
  }
  const finisher = driverFor(t, server);
  const last = await finisher.writer(path, state);
  await last.commit();
  const whole = Buffer.concat(pieces);
  t.equal(sha256Hex(await readAll(await finisher.reader(path))), sha256Hex(whole), 'the committed object is exactly the concatenation');
  // "EntityTooSmall … Each part must be at least 5 MB in size, except the last part." The server enforces it at
  // Complete; the driver must never have sent a small part that another part followed.
  const completes = server.requests.filter((r) => r.method === 'POST' && 'uploadId' in r.query);
  t.same(
    completes.map((r) => r.status),
    [200],
    'one CompleteMultipartUpload, accepted',
  );
  const partSizes = server.requests.filter((r) => r.method === 'PUT' && 'partNumber' in r.query && r.status === 200).map((r) => r.bytes ?? 0);
  t.ok(
    partSizes.slice(0, -1).every((n) => n >= 5 * MiB),
    'every part but the last sent was at least 5 MiB',
    { partSizes },
  );
  t.same(server.uploads(), [], 'no multipart upload left');
  t.same(server.keys(), ['docker/registry/v2/repositories/r/_uploads/u1/data'], 'no tail object left, only the data');
});

t.test('a small upload commits as one PutObject, without a multipart upload', async (t) => {
  const server = await startS3Server(t);
  const driver = driverFor(t, server);
  const w1 = await driver.writer('/up/data');
  await w1.write(randomBytes(1000));
  const state = viaJson(await w1.close());
  const w2 = await driver.writer('/up/data', state);
  await w2.write(randomBytes(24));
  await w2.commit();
  t.equal((await driver.stat('/up/data')).size, 1024, 'committed size');
  t.notOk(
    server.requests.some((r) => 'uploads' in r.query),
    'no CreateMultipartUpload was sent',
  );
  t.same(server.keys(), ['up/data'], 'the tail is gone');
});

for (const n of [1, 3]) {
  t.test(`memory per writer stays at N + 1 parts while data streams out (multipartuploadmaxconcurrency ${n})`, async (t) => {
    const server = await startS3Server(t);
    const driver = driverFor(t, server, { multipartuploadmaxconcurrency: n });
    const writer = await driver.writer('/big/data');
    t.ok(writer instanceof S3Writer, 'an S3 writer');
    const s3Writer = writer as S3Writer;
    const bound = (n + 1) * 5 * MiB;
    const chunk = randomBytes(64 * 1024);
    const total = 48 * MiB;
    const hash = createHash('sha256');
    let over = 0;
    for (let written = 0; written < total; written += chunk.length) {
      await writer.write(chunk);
      hash.update(chunk);
      // Bytes written that S3 has not stored yet are in the writer's memory: at most N parts in flight + 1 filling.
      const storedAtServer = server.requests.filter((r) => 'partNumber' in r.query && r.status === 200).reduce((sum, r) => sum + (r.bytes ?? 0), 0);
      if (written + chunk.length - storedAtServer > bound || s3Writer.buffered > bound) over++;
    }
    t.equal(over, 0, `after each write, at most ${n + 1} parts' worth of bytes were not yet at S3`);
    t.ok(s3Writer.peakBuffered <= bound, `at most ${n + 1} parts held at once (peak ${s3Writer.peakBuffered})`);
    await writer.commit();
    t.equal(s3Writer.buffered, 0, 'nothing held after commit');
    t.equal(sha256Hex(await readAll(await driver.reader('/big/data'))), hash.digest('hex'), 'all bytes committed, in order');
    t.same(server.uploads(), [], 'no multipart upload left');
  });
}

/**
 * Watches part uploads at the S3 server (its beforeHandle hook) and holds those `hold` picks until released. A
 * driver that waits where it should not would hang on a held part: after 10 s the gate opens by itself, so the test's
 * assertions about what happened while parts were held fail instead.
 */
function partGate(hold: (part: number) => boolean): {
  beforeHandle: (r: RecordedRequest) => Promise<void>;
  /** Part numbers whose upload reached the server, in arrival order. */
  arrived: number[];
  /** Resolves once `count` part uploads have reached the server. */
  arrivals(count: number): Promise<void>;
  /** Lets the held part uploads (and every later one) through. */
  release(): void;
} {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  const safety = setTimeout(open, 10_000);
  safety.unref();
  const arrived: number[] = [];
  const waiters: Array<{ count: number; resolve: () => void }> = [];
  return {
    arrived,
    beforeHandle: async (r) => {
      if (r.method !== 'PUT' || !('partNumber' in r.query)) return;
      const part = Number(r.query.partNumber);
      arrived.push(part);
      for (const w of waiters) if (arrived.length >= w.count) w.resolve();
      if (hold(part)) await opened;
    },
    arrivals: (count) => (arrived.length >= count ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ count, resolve }))),
    release: () => {
      clearTimeout(safety);
      open();
    },
  };
}

/** Lets pending I/O and promise callbacks run, then tells whether `p` has settled. */
async function settledYet(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
  return settled;
}

const storedParts = (server: S3Server): number[] => server.uploads()[0]?.parts ?? [];

t.test('parts upload in parallel and may finish out of order; Complete lists them in byte order', async (t) => {
  const gate = partGate((part) => part === 1);
  const server = await startS3Server(t, { beforeHandle: gate.beforeHandle });
  const driver = driverFor(t, server, { multipartuploadmaxconcurrency: 2 });
  const content = randomBytes(15 * MiB + 123);
  const writer = await driver.writer('/up/data');
  // Part 1 is held at S3: part 2 goes up beside it and finishes first, then part 3 takes its slot.
  await writer.write(content);
  t.notOk(storedParts(server).includes(1), 'write resolved while part 1 was still in flight');
  t.ok(storedParts(server).includes(2), 'part 2 was stored before part 1');
  await gate.arrivals(3);
  t.same(gate.arrived, [1, 2, 3], 'part 3 was sent too');
  t.notOk(storedParts(server).includes(1), 'while part 1 was still in flight');
  gate.release();
  await writer.commit();
  const completes = server.requests.filter((r) => r.method === 'POST' && 'uploadId' in r.query);
  // The server refuses a part list out of order (InvalidPartOrder) or with a wrong ETag (InvalidPart), as S3 does.
  t.same(
    completes.map((r) => r.status),
    [200],
    'CompleteMultipartUpload accepted the part list',
  );
  t.equal(sha256Hex(await readAll(await driver.reader('/up/data'))), sha256Hex(content), 'the object is exactly the bytes written');
  t.same(server.uploads(), [], 'no multipart upload left');
});

t.test('back-pressure: with N parts in flight, the write that fills the next buffer waits', async (t) => {
  const gate = partGate(() => true);
  const server = await startS3Server(t, { beforeHandle: gate.beforeHandle });
  const driver = driverFor(t, server, { multipartuploadmaxconcurrency: 2 });
  const pieces = Array.from({ length: 5 }, () => randomBytes(5 * MiB));
  const writer = (await driver.writer('/up/data')) as S3Writer;
  await writer.write(pieces[0]!);
  await writer.write(pieces[1]!);
  await gate.arrivals(2);
  t.equal(writer.buffered, 10 * MiB, 'two parts in flight count as held');
  const third = writer.write(pieces[2]!);
  t.notOk(await settledYet(third), 'the third full buffer waits for a free slot');
  t.equal(writer.buffered, 15 * MiB, 'the writer holds N + 1 = 3 parts');
  t.same(gate.arrived, [1, 2], 'no third part was sent');
  gate.release();
  await third;
  for (const piece of pieces.slice(3)) await writer.write(piece);
  await writer.commit();
  t.equal(writer.peakBuffered, 15 * MiB, 'the peak was N + 1 parts, never more');
  t.equal(sha256Hex(await readAll(await driver.reader('/up/data'))), sha256Hex(Buffer.concat(pieces)), 'exact bytes');
});

t.test('close waits for the parts in flight; the state resumes correctly', async (t) => {
  const gate = partGate(() => true);
  const server = await startS3Server(t, { beforeHandle: gate.beforeHandle });
  const driver = driverFor(t, server, { multipartuploadmaxconcurrency: 3 });
  const first = randomBytes(17 * MiB + 5);
  const w1 = await driver.writer('/up/data');
  await w1.write(first);
  await gate.arrivals(3);
  const closing = w1.close();
  t.notOk(await settledYet(closing), 'close waits while three parts are in flight');
  gate.release();
  const state = viaJson(await closing);
  t.same(
    state.parts.map((p) => [p.n, p.size]),
    [
      [1, 5 * MiB],
      [2, 5 * MiB],
      [3, 5 * MiB],
    ],
    'the state lists the three stored parts, in order',
  );
  t.equal(state.tail?.size, 2 * MiB + 5, 'the rest is a tail');
  t.equal(state.size, first.length, 'the state records every byte');
  // Another process continues from the JSON state.
  const other = driverFor(t, server, { multipartuploadmaxconcurrency: 3 });
  const second = randomBytes(11 * MiB + 7);
  const w2 = await other.writer('/up/data', state);
  t.equal(w2.size, first.length, 'the resumed writer starts at the recorded size');
  await w2.write(second);
  await w2.commit();
  t.equal(sha256Hex(await readAll(await other.reader('/up/data'))), sha256Hex(Buffer.concat([first, second])), 'exact concatenation');
  t.same(server.uploads(), [], 'no multipart upload left');
  t.same(server.keys(), ['up/data'], 'no tail left');
});

t.test('a part that fails after retries fails the upload; nothing is committed and cancel leaves nothing', async (t) => {
  // Parts from 3 on are held at S3 until the failure has shown, so it shows at the latest when buffer 4 waits for a slot.
  const gate = partGate((part) => part >= 3);
  const server = await startS3Server(t, { beforeHandle: gate.beforeHandle });
  const proxy = await startFaultProxy(t, server.endpoint);
  const driver = driverFor(t, server, { maxattempts: 3, multipartuploadmaxconcurrency: 2 }, proxy.endpoint);
  const part2 = (r: ProxiedRequest) => s3Op.uploadPart(r) && r.query.get('partNumber') === '2';
  proxy.failNext(3, 503, part2);
  const w = await driver.writer('/up/data');
  const chunk = randomBytes(MiB);
  let failedWrite: unknown;
  for (let i = 0; i < 25 && failedWrite === undefined; i++) {
    await w.write(chunk).catch((err: unknown) => (failedWrite = err));
  }
  gate.release();
  t.ok(failedWrite instanceof BackendUnavailableError, 'a later write fails with the part’s error', { found: failedWrite });
  await t.rejects(w.write(chunk), BackendUnavailableError, 'and so does every write after it');
  let commitError: unknown;
  await w.commit().catch((err: unknown) => (commitError = err));
  t.equal(commitError, failedWrite, 'commit fails with the same error');
  t.equal(proxy.requests.filter((r) => r.fault === '503').length, 3, 'the part was tried maxattempts times');
  t.notOk(
    server.requests.some((r) => r.method === 'POST' && 'uploadId' in r.query),
    'no CompleteMultipartUpload was sent',
  );
  await t.rejects(driver.stat('/up/data'), PathNotFoundError, 'nothing was committed');
  await w.cancel();
  t.same(server.uploads(), [], 'cancel left no multipart upload');
  t.same(server.keys(), [], 'and no object');

  // The same through close: the state of a failed writer is never returned.
  proxy.failNext(3, 503, part2);
  const w2 = await driver.writer('/up/data');
  await w2.write(randomBytes(10 * MiB)).catch(() => undefined);
  await t.rejects(w2.close(), BackendUnavailableError, 'close fails with the part’s error');
  await w2.cancel();
  t.same(server.uploads(), [], 'cancel left no multipart upload');
});

t.test('move: server-side copy, multipart above the threshold', async (t) => {
  // CopyObject refuses sources above 6 MiB here, as S3 does above 5 GiB: the driver must use UploadPartCopy.
  const server = await startS3Server(t, { maxCopyObjectSize: 6 * MiB });
  const driver = driverFor(t, server, { multipartcopythresholdsize: 5 * MiB, multipartcopychunksize: 5 * MiB, multipartcopymaxconcurrency: 2 });
  const content = randomBytes(12 * MiB + 3);
  const w = await driver.writer('/uploads/x/data');
  await w.write(content);
  await w.commit();
  await driver.move('/uploads/x/data', '/blobs/sha256/ab/abc/data');
  t.equal(sha256Hex(await readAll(await driver.reader('/blobs/sha256/ab/abc/data'))), sha256Hex(content), 'destination has the bytes');
  await t.rejects(driver.stat('/uploads/x/data'), PathNotFoundError, 'source is gone');
  const copies = server.requests.filter((r) => r.method === 'PUT' && 'partNumber' in r.query && r.path.includes('/blobs/'));
  t.equal(copies.length, 3, 'three UploadPartCopy requests (5 + 5 + 2 MiB)');
  t.ok(
    copies.every((r) => r.status === 200),
    'all accepted',
  );

  const small = randomBytes(100);
  await driver.putContent('/a', small);
  await driver.move('/a', '/b');
  t.equal(sha256Hex(await driver.getContent('/b')), sha256Hex(small), 'a small object moves with CopyObject');
  t.same(server.uploads(), [], 'no multipart upload left');
});

t.test('delete of an upload directory aborts its multipart upload and removes tails', async (t) => {
  const server = await startS3Server(t);
  const driver = driverFor(t, server);
  const dir = '/docker/registry/v2/repositories/r/_uploads/gone';
  await driver.putContent(`${dir}/startedat`, Buffer.from(new Date().toISOString()));
  const w = await driver.writer(`${dir}/data`);
  await w.write(randomBytes(6 * MiB));
  await w.close();
  t.equal(server.uploads().length, 1, 'a multipart upload is in progress');
  t.equal(tailKeys(server).length, 1, 'with a tail');
  await driver.delete(dir);
  t.same(server.uploads(), [], 'the multipart upload was aborted');
  t.same(server.keys(), [], 'every object under the directory is gone');
});

t.test('abortStaleUploads aborts multipart uploads older than a cut-off', async (t) => {
  const server = await startS3Server(t);
  const driver = driverFor(t, server);
  const w = await driver.writer('/u/data');
  await w.write(randomBytes(5 * MiB));
  await w.close();
  t.equal(await driver.abortStaleUploads(new Date(Date.now() - 3_600_000)), 0, 'a fresh upload is kept');
  t.equal(await driver.abortStaleUploads(new Date(Date.now() + 60_000)), 1, 'an old one is aborted');
  t.same(server.uploads(), []);
});

t.test('faults: a 503 on a part upload is retried and the upload succeeds', async (t) => {
  const { server, proxy, driver } = await withProxy(t);
  proxy.failNext(1, 503, s3Op.uploadPart);
  proxy.failNext(1, 500, s3Op.completeMultipart);
  const content = randomBytes(11 * MiB);
  const w = await driver.writer('/up/data');
  await w.write(content);
  await w.commit();
  t.same(
    proxy.requests.filter((r) => r.fault).map((r) => r.fault),
    ['503', '500'],
    'both faults were injected',
  );
  t.equal(sha256Hex(await driver.getContent('/up/data')), sha256Hex(content), 'the object is exact');
  t.same(server.uploads(), []);
});

t.test('faults: a connection dropped mid part body is retried with the same bytes', async (t) => {
  const { proxy, driver } = await withProxy(t);
  proxy.dropMidRequest(1, MiB, s3Op.uploadPart);
  const content = randomBytes(7 * MiB);
  const w = await driver.writer('/up/data');
  await w.write(content);
  await w.commit();
  t.ok(
    proxy.requests.some((r) => r.fault === 'drop-request'),
    'the drop was injected',
  );
  t.equal(sha256Hex(await driver.getContent('/up/data')), sha256Hex(content), 'the object is exact');
});

t.test('faults: a lost CompleteMultipartUpload answer is recognised as success', async (t) => {
  const { proxy, driver } = await withProxy(t);
  proxy.dropMidResponse(1, 0, s3Op.completeMultipart);
  const content = randomBytes(6 * MiB);
  const w = await driver.writer('/up/data');
  await w.write(content);
  await w.commit();
  t.ok(
    proxy.requests.some((r) => r.fault === 'drop-response'),
    'the drop was injected',
  );
  t.equal(sha256Hex(await driver.getContent('/up/data')), sha256Hex(content), 'the object is exact');
});

t.test('faults: S3 down → BackendUnavailableError and nothing committed', async (t) => {
  const { server, proxy, driver } = await withProxy(t);
  const content = randomBytes(7 * MiB);
  const w1 = await driver.writer('/up/data');
  await w1.write(content.subarray(0, 6 * MiB));
  const state = viaJson(await w1.close());

  // Resumed before the outage (that reads the tail back), committed during it.
  const w2 = await driver.writer('/up/data', state);
  await w2.write(content.subarray(6 * MiB));
  proxy.setDown(true);
  await t.rejects(driver.health(), BackendUnavailableError, 'health reports S3 unavailable');
  await t.rejects(w2.commit(), BackendUnavailableError, 'commit fails as unavailable');
  await t.rejects(driver.writer('/up/data', state), BackendUnavailableError, 'resuming (reading the tail) fails as unavailable');
  await t.rejects(driver.getContent('/up/data'), BackendUnavailableError, 'reads fail as unavailable');
  await t.rejects(driver.move('/up/data', '/blob/data'), BackendUnavailableError, 'move fails as unavailable');
  proxy.setDown(false);

  await driver.health();
  await t.rejects(driver.stat('/up/data'), PathNotFoundError, 'nothing was committed at the upload path');
  await t.rejects(driver.stat('/blob/data'), PathNotFoundError, 'nothing at the final path');
  // The upload continues from its last stored state once S3 is back.
  const w3 = await driver.writer('/up/data', state);
  await w3.write(content.subarray(6 * MiB));
  await w3.commit();
  await driver.move('/up/data', '/blob/data');
  t.equal(sha256Hex(await driver.getContent('/blob/data')), sha256Hex(content), 'resumed after the outage, exact bytes');
  t.same(server.uploads(), []);
});

t.test('faults: S3 answering 503 to everything → BackendUnavailableError', async (t) => {
  const { proxy, driver } = await withProxy(t);
  await driver.putContent('/f', Buffer.from('x'));
  proxy.failNext(1000, 503);
  await t.rejects(driver.getContent('/f'), BackendUnavailableError, 'getContent');
  await t.rejects(driver.putContent('/g', Buffer.from('y')), BackendUnavailableError, 'putContent');
  await t.rejects(driver.list('/'), BackendUnavailableError, 'list');
  const w = await driver.writer('/up/data');
  await t.rejects(w.write(randomBytes(5 * MiB)), BackendUnavailableError, 'a part upload');
  const attempts = proxy.requests.filter((r) => r.fault === '503' && r.path.endsWith('/f')).length;
  t.equal(attempts, 3, 'each request was tried maxattempts times');
  proxy.clear();
  await t.rejects(driver.stat('/g'), PathNotFoundError, 'the failed put left nothing');
});

t.test('faults: a download broken mid-body resumes from where it stopped', async (t) => {
  const { proxy, driver } = await withProxy(t);
  const content = randomBytes(9 * MiB);
  await driver.putContent('/blob', content);
  proxy.dropMidResponse(2, 3 * MiB, s3Op.getObject);
  t.equal(sha256Hex(await readAll(await driver.reader('/blob'))), sha256Hex(content), 'whole read: exact bytes');
  t.equal(proxy.requests.filter((r) => r.fault === 'drop-response').length, 2, 'two drops were injected');

  proxy.dropMidResponse(1, MiB, s3Op.getObject);
  t.equal(
    sha256Hex(await readAll(await driver.reader('/blob', 2 * MiB, 4 * MiB))),
    sha256Hex(content.subarray(2 * MiB, 6 * MiB)),
    'ranged read: exact bytes',
  );

  proxy.dropMidResponse(100, MiB, s3Op.getObject);
  await t.rejects(readAll(await driver.reader('/blob')), BackendUnavailableError, 'a download that keeps breaking fails as unavailable');
  proxy.clear();

  // The object changing under a resumed download must not splice two versions.
  proxy.dropMidResponse(1, MiB, s3Op.getObject);
  const reader = await driver.reader('/blob');
  await driver.putContent('/blob', randomBytes(9 * MiB));
  await t.rejects(readAll(reader), 'a resumed download of a replaced object fails instead of mixing versions');
});

t.test('presigned redirect URLs', async (t) => {
  const server = await startS3Server(t);
  const driver = driverFor(t, server, { redirectexpiry: '10m' });
  t.equal(driver.redirectExpirySeconds, 600, 'redirectexpiry is exposed for the caller');
  const content = randomBytes(3000);
  await driver.putContent('/docker/registry/v2/blobs/sha256/ab/abc/data', content);
  const url = await driver.redirectURL('/docker/registry/v2/blobs/sha256/ab/abc/data', { method: 'GET', expiresInSeconds: 600 });
  t.ok(url, 'a URL');
  const ok = await fetch(url as string);
  t.equal(ok.status, 200, 'plain fetch of the presigned URL works');
  t.equal(sha256Hex(Buffer.from(await ok.arrayBuffer())), sha256Hex(content), 'with the object bytes');
  const ranged = await fetch(url as string, { headers: { Range: 'bytes=10-19' } });
  t.equal(ranged.status, 206, 'Range works on the presigned URL');
  t.same(Buffer.from(await ranged.arrayBuffer()), content.subarray(10, 20));

  const headUrl = await driver.redirectURL('/docker/registry/v2/blobs/sha256/ab/abc/data', { method: 'HEAD', expiresInSeconds: 60 });
  const head = await fetch(headUrl as string, { method: 'HEAD' });
  t.equal(head.status, 200, 'a HEAD URL works for HEAD');
  t.equal(head.headers.get('content-length'), '3000');

  const u = new URL(url as string);
  const sig = u.searchParams.get('X-Amz-Signature') as string;
  u.searchParams.set('X-Amz-Signature', `${sig.slice(0, -1)}${sig.endsWith('0') ? '1' : '0'}`);
  const tampered = await fetch(u);
  t.equal(tampered.status, 403, 'a tampered signature is refused');
  t.match(await tampered.text(), /SignatureDoesNotMatch/);
  const otherKey = await fetch((url as string).replace('/abc/data', '/abd/data'));
  t.equal(otherKey.status, 403, 'the URL does not open another key');
  const unsigned = await fetch(`${server.endpoint}/${server.bucket}/docker/registry/v2/blobs/sha256/ab/abc/data`);
  t.equal(unsigned.status, 403, 'an unsigned request is refused');

  server.setClockOffset(601_000);
  const expired = await fetch(url as string);
  t.equal(expired.status, 403, 'an expired URL is refused');
  t.match(await expired.text(), /Request has expired/);
});

t.test('createS3Driver validates the section', async (t) => {
  const warnings: string[] = [];
  t.throws(() => createS3Driver({ region: 'us-east-1' }, (m) => warnings.push(m)), /storage\.s3\.bucket/, 'bucket is required');
  const d = createS3Driver({ bucket: 'b', region: 'eu-west-1', surprise: 1, loglevel: 'debug' }, (m) => warnings.push(m));
  t.teardown(() => d.close());
  t.ok(
    warnings.some((w) => w.includes('storage.s3.surprise')),
    'unknown keys warn',
  );
  t.ok(
    warnings.some((w) => w.includes('storage.s3.loglevel') && w.includes('not used')),
    'accepted Distribution keys warn as unused',
  );
});
