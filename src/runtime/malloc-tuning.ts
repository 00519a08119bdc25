import { collectYoungGeneration } from '../storage/spent-buffers.js';

/**
 * Keeps freed blob memory in the process instead of handing it back to the kernel between requests (glibc only).
 *
 * Every read of a request body allocates two 64 KiB buffers with malloc (the socket read and Node's HTTP parser's
 * copy of it); the copies are freed in bursts, a few MiB at a time, once written and hashed. glibc gives the free
 * memory at the top of its heap back to the kernel whenever more than its trim threshold (128 KiB by default) is free
 * there, so each burst went back to the kernel and the next reads took it again page by page: ~10,000 page faults
 * per 256 MiB push (40 MiB faulted in and zeroed). Measured with the faults gone (alternating runs, 5 pushes each
 * after 3 to warm up): main thread 256-274 -> 190-210 ms per push, 670-766 -> 892 MiB/s.
 *
 * Node has no `mallopt`. glibc raises both thresholds by itself when a block it had mapped on its own (any block
 * above the mmap threshold) is freed: the mmap threshold becomes that block's size and the trim threshold twice it
 * (the dynamic mmap threshold of mallopt(3), capped at 32 MiB). Freeing one {@link TRIM_BLOCK} buffer at startup
 * therefore sets them to 8 and 16 MiB: a burst of freed buffers stays in the heap for the next reads, and at most
 * ~16 MiB more than before stays mapped while idle. (A push holds up to ~8 MiB of chunks between the socket and the
 * writer and hash: with 4 and 8 MiB the faults came back, ~3,500 per push.) An operator who set
 * `MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_` or their `GLIBC_TUNABLES` switched the dynamic adjustment off:
 * their values stand.
 */

/** Size of the buffer freed at startup: the mmap threshold it leaves (the trim threshold is twice it). */
export const TRIM_BLOCK = 8 * 1024 * 1024;

/** True when this process's C library is glibc (Linux); false elsewhere (musl, macOS, Windows). */
export function usesGlibc(): boolean {
  if (process.platform !== 'linux') return false;
  try {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
    return typeof header?.glibcVersionRuntime === 'string';
  } catch {
    return false;
  }
}

/**
 * Allocates and frees one {@link TRIM_BLOCK} buffer so glibc raises its thresholds (see above); false where the C
 * library is not glibc (nothing done). The buffer is freed by the collection this runs (its memory may be released
 * a moment later, by V8's sweeper thread).
 */
export function raiseMallocTrimThreshold(): boolean {
  if (!usesGlibc()) return false;
  // Outside V8's heap and above glibc's default mmap threshold (128 KiB): glibc maps it on its own.
  let block: Buffer | undefined = Buffer.allocUnsafeSlow(TRIM_BLOCK);
  block[0] = 0;
  block = undefined;
  collectYoungGeneration();
  return true;
}
