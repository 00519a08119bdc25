/**
 * The worker side of {@link HashThreads} (hash-threads.ts): running sha256 states, fed with segments the main thread
 * fills and transfers here; each goes back once hashed. Messages are handled in the order they were posted, so a digest asked after some
 * updates covers exactly those updates.
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
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
    case 'update':
      state(message.id).update(new Uint8Array(message.segment, 0, message.length));
      port?.postMessage({ op: 'free', segment: message.segment } satisfies FromHashThread, [message.segment]);
      break;
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
