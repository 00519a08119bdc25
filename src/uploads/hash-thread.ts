/**
 * The worker side of {@link HashThreads} (hash-threads.ts): running sha256 states, fed with batches of memory the
 * main thread transfers here; the segments among them go back once hashed, the rest (chunks handed over) are dropped.
 * Messages are handled in the order they were posted, so a digest asked after some updates covers exactly those
 * updates.
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { spentBuffers } from '../storage/spent-buffers.js';
import type { FromHashThread, ToHashThread } from './hash-threads.js';

const port = parentPort;
const states = new Map<number, Hash>();

function state(id: number): Hash {
  let hash = states.get(id);
  if (!hash) {
    hash = createHash('sha256');
    states.set(id, hash);
  }
  return hash;
}

port?.on('message', (message: ToHashThread) => {
  switch (message.op) {
    case 'update': {
      const hash = state(message.id);
      let dropped = 0;
      for (let i = 0; i < message.parts.length; i++) {
        hash.update(new Uint8Array(message.parts[i]!, 0, message.lengths[i]));
        dropped += message.lengths[i]!;
      }
      const segments = message.segments.map((i) => {
        dropped -= message.lengths[i]!;
        return message.parts[i]!;
      });
      port?.postMessage({ op: 'free', segments } satisfies FromHashThread, segments);
      // The other parts (chunks handed over) are garbage now: freed promptly, as the main thread frees its own.
      spentBuffers(dropped);
      break;
    }
    case 'digest': {
      const hex = state(message.id).digest('hex');
      states.delete(message.id);
      port?.postMessage({ op: 'digest', id: message.id, hex } satisfies FromHashThread);
      break;
    }
    case 'drop':
      states.delete(message.id);
      break;
  }
});
