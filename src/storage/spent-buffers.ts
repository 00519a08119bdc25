import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Frees the memory of blob data that has been received and written, without waiting for V8 to decide to.
 *
 * Every chunk read from a socket is a fresh buffer outside V8's heap. A push of 256 MiB leaves 256 MiB of such
 * buffers behind as garbage, and V8 counts that memory against its heap limits: with the limits berth sets
 * (src/runtime/heap-tuning.ts) it ran a full collection of the whole heap every 16 MiB pushed (16 per 256 MiB push, a
 * third of the push's CPU), and with V8's own limits the garbage sat in memory instead (peak RSS +60 MiB). A
 * collection of the young generation alone, every {@link EVERY} bytes received by the whole process, frees the chunks
 * already written (their handles are still young) for ~0.3 ms each: measured on a 256 MiB push, 1 full collection
 * instead of 16 at 4 MiB (at 8 MiB: 13-16, no better than none), and the peak RSS ~15 MiB lower.
 */

/** Bytes received (by all uploads together) between two young-generation collections. */
const EVERY = 4 * 1024 * 1024;

type Gc = (options: { type: 'minor'; execution: 'sync' }) => void;

let gc: Gc | null | undefined;
let sinceLast = 0;

/** V8's `gc`, exposed in a new context (the process's own global stays without it); null if V8 refuses. */
function loadGc(): Gc | null {
  try {
    setFlagsFromString('--expose-gc');
    const fn: unknown = runInNewContext('gc');
    return typeof fn === 'function' ? (fn as Gc) : null;
  } catch {
    return null;
  }
}

/** Counts `bytes` of blob data received; collects the young generation once every {@link EVERY} bytes. */
export function spentBuffers(bytes: number): void {
  sinceLast += bytes;
  if (sinceLast < EVERY) return;
  sinceLast = 0;
  collectYoungGeneration();
}

/** Collects V8's young generation now (frees the memory of young buffers nothing holds); nothing if V8 refuses. */
export function collectYoungGeneration(): void {
  gc ??= loadGc();
  gc?.({ type: 'minor', execution: 'sync' });
}
