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
function slowSink(inFlight: InFlight, buffers: Set<ArrayBufferLike>): { sink: Writable; bytes: () => Buffer } {
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      parts.push(Buffer.from(chunk));
      setTimeout(callback, 2);
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

/** `count` GETs of the file at once, piped as a blob answer pipes them; each one's bytes, and the buffers seen. */
async function gets(driver: FilesystemDriver, count: number, inFlight: InFlight): Promise<{ bodies: Buffer[]; buffers: Set<ArrayBufferLike> }> {
  const buffers = new Set<ArrayBufferLike>();
  const bodies = await Promise.all(
    Array.from({ length: count }, async () => {
      const stream = await driver.reader('/blob');
      if (!canRecycleBuffers(stream)) throw new Error('the filesystem reader does not recycle its buffers');
      stream.recycleBuffersWhenPiped();
      const { sink, bytes } = slowSink(inFlight, buffers);
      await new Promise<void>((resolve, reject) => {
        sink.on('finish', resolve).on('error', reject);
        stream.on('error', reject);
        stream.pipe(sink);
      });
      return bytes();
    }),
  );
  return { bodies, buffers };
}

t.test('one GET alone reads ahead into four buffers and sends the file whole', async (t) => {
  const { driver, data } = await setup(t);
  const inFlight = new InFlight();
  const { bodies } = await gets(driver, 1, inFlight);
  t.equal(digestOf(bodies[0]!).value, digestOf(data).value);
  t.equal(inFlight.most, 4, 'four buffers waited on the slow destination at once');
});

t.test('eight GETs at once share the budget, and later GETs reuse the buffers', async (t) => {
  const { driver, data } = await setup(t);
  const inFlight = new InFlight();
  const first = await gets(driver, 8, inFlight);
  for (const body of first.bodies) t.equal(digestOf(body).value, digestOf(data).value);
  t.ok(inFlight.most <= 8 + SHARED_EXTRA_BUFFERS, `at most one buffer each plus the shared ${SHARED_EXTRA_BUFFERS} (${inFlight.most})`);
  t.ok(inFlight.most > 8, `GETs took extra buffers beyond their first (${inFlight.most})`);

  const again = await gets(driver, 2, new InFlight());
  for (const body of again.bodies) t.equal(digestOf(body).value, digestOf(data).value);
  const reused = [...again.buffers].filter((b) => first.buffers.has(b)).length;
  t.ok(reused > 0, `the next GETs read into buffers the earlier ones were done with (${reused} of ${again.buffers.size})`);
});
