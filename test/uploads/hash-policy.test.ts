/** Which uploads hash on a thread of their own: on the filesystem, yes; on S3 (slower than one thread hashes), no. */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import type { StorageDriver } from '../../src/storage/driver.js';
import { startBerth } from '../helpers/berth.js';
import { tempDir } from '../helpers/ports.js';
import { sha256 } from '../helpers/digest.js';

const threads = async (): Promise<number> => (await readdir('/proc/self/task')).length;

/** The filesystem driver under another name (the upload service decides by the driver's name). */
function named(driver: FilesystemDriver, name: string): StorageDriver {
  return new Proxy(driver, { get: (target, key) => (key === 'name' ? name : (Reflect.get(target, key, target) as unknown)) }) as StorageDriver;
}

async function push(url: string, repo: string, blob: Buffer): Promise<number> {
  const res = await fetch(`${url}/v2/${repo}/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob });
  await res.arrayBuffer();
  return res.status;
}

t.test(
  'S3 uploads are hashed on the calling thread; filesystem uploads on a hashing thread',
  { skip: process.platform !== 'linux' && 'counts threads in /proc' },
  async (t) => {
    const blob = randomBytes(3 * 1024 * 1024);
    const s3Root = await tempDir(t, 'berth-hash-policy-');
    const s3 = await startBerth(
      t,
      { storage: { filesystem: { rootdirectory: s3Root } } },
      { driver: named(new FilesystemDriver({ rootDirectory: s3Root }), 's3') },
    );
    t.equal(await push(s3.url, 'warm/up', randomBytes(3 * 1024 * 1024)), 201, 'a first push (starts the thread pool)');
    const before = await threads();
    t.equal(await push(s3.url, 'on/s3', blob), 201);
    t.equal(await threads(), before, 'no thread started for an upload to S3');

    const fs = await startBerth(t);
    t.equal(await push(fs.url, 'on/fs', blob), 201);
    t.ok((await threads()) > before, 'the filesystem upload started the hashing thread', { before, after: await threads() });
  },
);
