/**
 * Run as a script by test/unit/malloc-tuning.test.ts: `node malloc-churn.js [tuned]`. Frees memory the way a push
 * does (64 KiB buffers allocated on this thread, their memory handed to a worker thread that drops it and collects),
 * 25 rounds of 4 MiB, and prints the page faults per round over the last 20. With `tuned`, berth's
 * raiseMallocTrimThreshold() runs first.
 */
import { Worker } from 'node:worker_threads';
import { raiseMallocTrimThreshold } from '../../src/runtime/malloc-tuning.js';

if (process.argv[2] === 'tuned') raiseMallocTrimThreshold();
const worker = new Worker(
  `const { parentPort } = require('node:worker_threads');
   require('node:v8').setFlagsFromString('--expose-gc');
   const collect = require('node:vm').runInNewContext('gc');
   parentPort.on('message', () => { collect({ type: 'minor', execution: 'sync' }); parentPort.postMessage('freed'); });`,
  { eval: true },
);
await new Promise((resolve) => worker.once('online', resolve));
let before = 0;
for (let round = 0; round < 25; round++) {
  if (round === 5) before = process.resourceUsage().minorPageFault;
  const memory: ArrayBuffer[] = [];
  for (let i = 0; i < 64; i++) {
    const chunk = Buffer.allocUnsafeSlow(64 * 1024);
    chunk.fill(round);
    memory.push(chunk.buffer as ArrayBuffer);
  }
  worker.postMessage(memory, memory);
  await new Promise((resolve) => worker.once('message', resolve));
  // V8's sweeper frees the memory shortly after the collection.
  await new Promise((resolve) => setTimeout(resolve, 5));
}
process.stdout.write(`${(process.resourceUsage().minorPageFault - before) / 20}\n`);
await worker.terminate();
