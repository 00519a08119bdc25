import type { FileHandle } from 'node:fs/promises';
import { Readable, type Writable } from 'node:stream';
import type { RecyclingReadable } from '../driver.js';
import { spentBuffers } from '../spent-buffers.js';

/** Bytes read per `read` call: few syscalls, and the size of each buffer a stream holds. */
const CHUNK = 1024 * 1024;

/**
 * Buffers a recycling pipe keeps: one being read into while the others wait to be written, so reading the file and
 * sending it overlap and the socket always has data queued. Bounds memory per stream at `RECYCLED * CHUNK`.
 * Measured on a 256 MiB GET (2 cores, loaded): 2 buffers ~610 MiB/s, 3 ~1010, 4 ~1100, at the same CPU per GET.
 */
const RECYCLED = 4;

/**
 * The read buffers of the recycling pipes of the process. Each pipe always gets its first buffer; its second to
 * fourth come out of a shared budget of {@link SHARED_EXTRA_BUFFERS}, so one GET keeps its overlap of reads and sends
 * while many GETs at once share a bound. While GETs run, a buffer one of them is done with serves the next (before,
 * each made its own: 8 parallel GETs held 32 MiB of buffers, and garbage of earlier ones waited for a full
 * collection). Once none runs, the buffers are let go ({@link letGo}), so an idle server keeps none (kept, they raised
 * the bench's peak RSS through single GETs by 4-5 MiB). Measured, 5 bursts of 8 parallel 256 MiB GETs beside the
 * previous build, three times: peak RSS 118 vs 140, 134 vs 144, 136 vs 138.
 */
class ReadBuffers {
  private readonly spare: Buffer[] = [];
  /** Extra buffers (beyond each pipe's first) the pipes hold now. */
  private extras = 0;
  /** Pipes reading now. */
  private active = 0;

  constructor(private readonly extraBudget: number) {}

  /** A pipe starts. */
  begin(): void {
    this.active++;
  }

  /**
   * A buffer of at least `want` bytes for a pipe that holds `held` already; undefined when it holds one or more and
   * the budget is spent. A range smaller than one chunk gets a buffer of its size (never shared).
   */
  take(held: number, want: number): Buffer | undefined {
    if (held > 0) {
      if (this.extras >= this.extraBudget) return undefined;
      this.extras++;
    }
    return this.spare.pop() ?? Buffer.allocUnsafeSlow(held === 0 && want < CHUNK ? want : CHUNK);
  }

  /** A pipe that took `held` buffers is done reading: its extras go back to the budget. */
  end(held: number): void {
    if (held > 1) this.extras -= held - 1;
    if (--this.active > 0) return;
    for (const buffer of this.spare.splice(0)) letGo(buffer);
  }

  /** A buffer nothing refers to any more: for the pipes still reading, else let go (a small one is just dropped). */
  give(buffer: Buffer): void {
    if (buffer.length < CHUNK) return;
    if (this.active > 0) this.spare.push(buffer);
    else letGo(buffer);
  }
}

/**
 * Frees a read buffer's memory soon: its memory moves (no copy) to a new ArrayBuffer nothing refers to, which the next
 * young-generation collection frees (counted as spent, one comes every 4 MiB), whereas the buffer itself may have
 * been in the heap long enough to wait for a full collection.
 */
function letGo(buffer: Buffer): void {
  const memory = buffer.buffer as ArrayBuffer;
  structuredClone(memory, { transfer: [memory] });
  spentBuffers(buffer.length);
}

/** Buffers beyond their first that all recycling pipes together may hold. */
export const SHARED_EXTRA_BUFFERS = 8;
const readBuffers = new ReadBuffers(SHARED_EXTRA_BUFFERS);

/**
 * The bytes `[start, end)` of an open file (to its end when `end` is Infinity), closing the handle when the stream
 * ends or is destroyed.
 *
 * Read with `read()`/`'data'`/`pipe()` as any Readable, each chunk is a new buffer (the reader may keep it). After
 * {@link recycleBuffersWhenPiped}, `pipe(dest)` instead reads into a few fixed buffers and passes each to
 * `dest.write` with a callback, reading into it again only once that callback has run. Serving a large blob then
 * allocates nothing per chunk: a fresh 1 MiB buffer per chunk is external memory, and V8 answers its pressure with
 * scavenges and full mark-compacts of the whole heap every few dozen megabytes sent — which on a blob GET cost more
 * CPU than the copying itself (profiled: issue 16).
 */
export class FileReadStream extends Readable implements RecyclingReadable {
  private position: number;
  private recycle = false;
  /** True once bytes were read the ordinary way: the stream can no longer switch to recycling. */
  private readStarted = false;
  /** True while a recycling pipe owns the stream; `_read` then does nothing. */
  private pumping = false;
  /** Wakes a recycling pipe that waits for a buffer to come back (or for the stream's end). */
  private wake: (() => void) | null = null;

  constructor(
    private readonly handle: FileHandle,
    private readonly start: number,
    private readonly end: number,
  ) {
    super({ highWaterMark: CHUNK });
    this.position = start;
  }

  get bytesRead(): number {
    return this.position - this.start;
  }

  recycleBuffersWhenPiped(): void {
    this.recycle = true;
  }

  override _read(): void {
    if (this.pumping) return;
    this.readStarted = true;
    const want = Math.min(CHUNK, this.end - this.position);
    if (want <= 0) {
      this.push(null);
      return;
    }
    const buffer = Buffer.allocUnsafeSlow(want);
    this.handle.read(buffer, 0, want, this.position).then(
      ({ bytesRead }) => {
        if (bytesRead === 0) {
          this.push(null);
          return;
        }
        this.position += bytesRead;
        this.push(bytesRead === want ? buffer : buffer.subarray(0, bytesRead));
      },
      (err: Error) => this.destroy(err),
    );
  }

  override pipe<T extends NodeJS.WritableStream>(dest: T, options?: { end?: boolean }): T {
    if (!this.recycle || this.readStarted || this.pumping || this.destroyed) return super.pipe(dest, options);
    this.pumping = true;
    this.pump(dest as unknown as Writable, options?.end !== false).catch((err: Error) => this.destroy(err));
    return dest;
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.wake?.();
    // A read still in flight holds the handle open: FileHandle.close waits for it.
    this.handle.close().then(
      () => callback(err),
      (closeErr: Error) => callback(err ?? closeErr),
    );
  }

  /**
   * Reads the range into at most {@link RECYCLED} buffers, writing each to `dest` and reusing it once `dest` has
   * called back. Back-pressure is the buffers themselves: nothing more is read while all of them wait to be written.
   */
  private async pump(dest: Writable, endDest: boolean): Promise<void> {
    const free: Buffer[] = [];
    let held = 0;
    let failed = false;
    let done = false;
    readBuffers.begin();
    const written = (buffer: Buffer) => (err?: Error | null) => {
      // A failed write means the response is gone; fastify then destroys this stream. The buffer is never reused
      // (the socket may still refer to it).
      if (err) failed = true;
      else if (done) readBuffers.give(buffer);
      else free.push(buffer);
      this.wake?.();
    };
    try {
      for (;;) {
        const want = Math.min(CHUNK, this.end - this.position);
        if (want <= 0) break;
        let buffer = free.pop();
        if (buffer === undefined && held < RECYCLED) {
          buffer = readBuffers.take(held, want);
          if (buffer) held++;
        }
        if (buffer === undefined) {
          await new Promise<void>((resolve) => (this.wake = resolve));
          this.wake = null;
          if (this.destroyed || failed) return;
          continue;
        }
        const { bytesRead } = await this.handle.read(buffer, 0, want, this.position);
        if (this.destroyed || failed) return;
        if (bytesRead === 0) break;
        this.position += bytesRead;
        dest.write(bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead), written(buffer));
      }
    } finally {
      // Done reading (or gone): the extras go back to the budget (the socket may still be sending from them), and the
      // buffers back from the socket, and those that come back later, go to the next pipes.
      done = true;
      for (const buffer of free.splice(0)) readBuffers.give(buffer);
      readBuffers.end(held);
    }
    if (endDest) dest.end();
    // The readable side ends as if its data had been consumed: 'end', then 'close' (which closes the handle).
    this.push(null);
    this.resume();
  }
}
