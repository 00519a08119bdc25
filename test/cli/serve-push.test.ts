import t from 'tap';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { spawnBerth } from '../helpers/berth-process.js';
import { tempDir } from '../helpers/ports.js';
import { RegistryClient } from '../helpers/registry-client.js';
import { usesGlibc } from '../../src/runtime/malloc-tuning.js';

/**
 * Issue 16, what `berth serve` prepares before the first push (src/cli/serve.ts), seen from outside the process
 * (Linux /proc): the hashing thread is running before any upload arrives, and blob memory freed during a push is
 * reused instead of being faulted in again from the kernel (src/runtime/malloc-tuning.ts).
 */

const MiB = 1024 * 1024;
const linux = existsSync('/proc/self/task');

/** A monolithic push (POST, then PUT with the whole body) of `mib` MiB of fresh random bytes over a socket. */
async function push(base: string, repo: string, mib: number): Promise<boolean> {
  return (await new RegistryClient(base).pushBlob(repo, randomBytes(mib * MiB))).uploaded;
}

async function threads(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/task`)).length;
}

/** Minor page faults of the process so far (field 10 of /proc/PID/stat). */
async function minorFaults(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
}

t.test('the hashing thread runs before the first push, and a push reuses freed memory', { skip: !linux && 'needs /proc' }, async (t) => {
  const dir = await tempDir(t, 'berth-servepush-');
  const berth = await spawnBerth(t, { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir });
  const pid = berth.proc.pid!;
  const before = await threads(pid);
  t.equal(await push(berth.url, 'warm/first', 16), true, 'the first push is stored');
  const after = await threads(pid);
  t.equal(after, before, `no thread started for the first push: ${before} threads before it, ${after} after`);

  if (usesGlibc()) {
    // The process's memory grows to its working size over the first pushes (each new page faults once: ~700-1800
    // faults per 64 MiB push here, falling to ~20 by the fifth); after that a push takes its memory from what the
    // previous one freed. Without the tuning every push faulted 2,100-3,300 times, growing or not.
    for (let i = 0; i < 4; i++) t.equal(await push(berth.url, 'warm/grow', 64), true, `64 MiB push ${i + 1} is stored`);
    const faults = await minorFaults(pid);
    for (let i = 0; i < 2; i++) t.equal(await push(berth.url, 'warm/more', 64), true, `64 MiB push ${i + 5} is stored`);
    const faulted = (await minorFaults(pid)) - faults;
    // 128 MiB is 32768 pages.
    t.ok(faulted < 2048, `${faulted} page faults while 128 MiB were pushed: fewer than 2048`);
  }
  await berth.stop();
});
