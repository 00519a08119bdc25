/**
 * Issue 16: the filesystem driver's readers, piped the way a blob GET pipes them (recycling their buffers), read a
 * file into at most four 1 MiB buffers each; all the GETs of the process share a budget for the second to fourth, and
 * buffers a GET is done with serve the next ones. Real files; the destination stands in for a slow socket.
 */
import t from 'tap';
import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { SHARED_EXTRA_BUFFERS } from '../../src/storage/drivers/file-read-stream.js';
import { canRecycleBuffers } from '../../src/storage/driver.js';
import { digestOf } from '../../src/oci/digest.js';
import { tempDir } from '../helpers/ports.js';

const MiB = 1024 * 1024;
const SIZE = 12 * MiB + 12345;

/** Writes in flight (handed to `write`, not yet called back) across every sink, and the most seen at once. */
class InFlight {
  now = 0;
  most = 0;
}

/** A destination that copies what it is given (as a socket does) and calls back a little later. */
function slowSink(inFlight: InFlight, buffers: Set<ArrayBufferLike>, delayMs: number): { sink: Writable; bytes: () => Buffer } {
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      parts.push(Buffer.from(chunk));
      setTimeout(callback, delayMs);
    },
  });
  const write = sink.write.bind(sink) as (chunk: Buffer, cb: (err?: Error | null) => void) => boolean;
  (sink as unknown as { write: typeof write }).write = (chunk, cb) => {
    buffers.add(chunk.buffer);
    inFlight.now++;
    inFlight.most = Math.max(inFlight.most, inFlight.now);
    return write(chunk, (err) => {
      inFlight.now--;
      cb(err);
    });
  };
  return { sink, bytes: () => Buffer.concat(parts) };
}

async function setup(t: Test): Promise<{ driver: FilesystemDriver; data: Buffer }> {
  const root = await tempDir(t, 'berth-read-');
  const data = randomBytes(SIZE);
  await writeFile(join(root, 'blob'), data);
  const driver = new FilesystemDriver({ rootDirectory: root });
  t.teardown(() => driver.close());
  return { driver, data };
}

/**
 * One GET of the file (its first `length` bytes, or all), piped as a blob answer pipes it into a destination that
 * takes `delayMs` per chunk: the bytes it sent.
 */
async function get(driver: FilesystemDriver, inFlight: InFlight, buffers: Set<ArrayBufferLike>, length?: number, delayMs = 2): Promise<Buffer> {
  const stream = await driver.reader('/blob', 0, length);
  if (!canRecycleBuffers(stream)) throw new Error('the filesystem reader does not recycle its buffers');
  stream.recycleBuffersWhenPiped();
  const { sink, bytes } = slowSink(inFlight, buffers, delayMs);
  await new Promise<void>((resolve, reject) => {
    sink.on('finish', resolve).on('error', reject);
    stream.on('error', reject);
    stream.pipe(sink);
  });
  return bytes();
}

t.test('one GET alone reads ahead into four buffers and sends the file whole', async (t) => {
  const { driver, data } = await setup(t);
  const inFlight = new InFlight();
  const body = await get(driver, inFlight, new Set());
  t.equal(digestOf(body).value, digestOf(data).value);
  t.equal(inFlight.most, 4, 'four buffers waited on the slow destination at once');
});

t.test('eight GETs at once share the budget', async (t) => {
  const { driver, data } = await setup(t);
  const inFlight = new InFlight();
  const bodies = await Promise.all(Array.from({ length: 8 }, () => get(driver, inFlight, new Set())));
  for (const body of bodies) t.equal(digestOf(body).value, digestOf(data).value);
  t.ok(inFlight.most <= 8 + SHARED_EXTRA_BUFFERS, `at most one buffer each plus the shared ${SHARED_EXTRA_BUFFERS} (${inFlight.most})`);
  t.ok(inFlight.most > 8, `GETs took extra buffers beyond their first (${inFlight.most})`);
});

t.test('a GET that starts while another runs reads into the buffers an earlier one was done with', async (t) => {
  const { driver, data } = await setup(t);
  const inFlight = new InFlight();
  // The long GET takes ~240 ms; the short ones ~10 ms each, one after the other, while it runs.
  const long = get(driver, inFlight, new Set(), undefined, 20);
  const first = new Set<ArrayBufferLike>();
  t.equal(digestOf(await get(driver, inFlight, first, 4 * MiB)).value, digestOf(data.subarray(0, 4 * MiB)).value);
  const next = new Set<ArrayBufferLike>();
  t.equal(digestOf(await get(driver, inFlight, next, 4 * MiB)).value, digestOf(data.subarray(0, 4 * MiB)).value);
  t.equal(digestOf(await long).value, digestOf(data).value);
  const reused = [...next].filter((b) => first.has(b)).length;
  t.ok(reused > 0, `the second short GET reused the first one's buffers (${reused} of ${next.size})`);
});

t.test('GETs whose clients went away give their buffers back to the budget', async (t) => {
  const { driver, data } = await setup(t);
  const gone = await Promise.all(
    Array.from({ length: 8 }, async () => {
      const stream = await driver.reader('/blob');
      if (!canRecycleBuffers(stream)) throw new Error('the filesystem reader does not recycle its buffers');
      stream.recycleBuffersWhenPiped();
      let writes = 0;
      const sink = new Writable({
        write(_chunk: Buffer, _encoding, callback) {
          // The third chunk finds the connection closed: the write fails and the answer is torn down, as fastify
          // destroys the body stream of a response whose socket closed.
          if (++writes === 3) {
            callback(new Error('socket closed'));
            stream.destroy();
            return;
          }
          setTimeout(callback, 2);
        },
      });
      sink.on('error', () => undefined);
      await new Promise<void>((resolve) => {
        stream.on('close', resolve);
        stream.pipe(sink);
      });
      return writes;
    }),
  );
  // A chunk already queued when the third failed may still reach the sink; none reads on to the end.
  t.ok(
    gone.every((writes) => writes >= 3 && writes < Math.ceil(SIZE / MiB)),
    `every GET stopped once its connection was gone (${gone.join(', ')} chunks)`,
  );

  const inFlight = new InFlight();
  t.equal(digestOf(await get(driver, inFlight, new Set())).value, digestOf(data).value);
  t.equal(inFlight.most, 4, 'the next GET alone reads ahead into four buffers again');
});
