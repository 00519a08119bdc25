/**
 * Run as a script by test/unit/heap-tuning.test.ts: applies berth's heap tuning, starts a hashing thread by hashing
 * 4 MiB on it, allocates short-lived objects for a while, then prints the young generation's size in bytes.
 */
import { getHeapSpaceStatistics } from 'node:v8';
import { applyHeapTuning } from '../../src/runtime/heap-tuning.js';
import { HashThreads } from '../../src/uploads/hash-threads.js';

applyHeapTuning();
const threads = new HashThreads({ threads: 1 });
const hash = threads.create();
const block = Buffer.alloc(1024 * 1024, 1);
for (let i = 0; i < 4; i++) await hash.update(block);
await hash.digest();
let keep: Array<{ n: number; s: string }> = [];
for (let i = 0; i < 3_000_000; i++) {
  keep.push({ n: i, s: `x${i}` });
  if (keep.length > 50_000) keep = [];
}
process.stdout.write(`${getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? -1}\n`);
await threads.close();
