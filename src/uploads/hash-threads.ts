import { createHash, type Hash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { reapplyHeapTuning } from '../runtime/heap-tuning.js';

/**
 * The running sha256 of an upload, computed beside the thread that receives the bytes.
 *
 * Hashing is the largest single cost of receiving a blob (~0.15 s of CPU per 256 MiB here, a third of berth's main
 * thread during a push); on a worker thread it runs in parallel with the socket reads and the writes. Bytes go to the
 * worker in batches of at least one segment's worth (one message per batch, transferred, not copied): a chunk the
 * caller hands over (its own memory, which nothing else holds: what Node's HTTP parser makes) goes as it is; other
 * chunks are copied into a segment (one `memcpy`), which the worker hands back once hashed. (Not a SharedArrayBuffer:
 * V8 copies into shared memory with a relaxed-atomic loop, measured at twice the cost of the plain copy.) An upload
 * whose bytes never fill one batch in a request (a config blob, a small chunk) is hashed on the main thread instead
 * and never touches the worker.
 */
export interface RunningHash {
  /**
   * True when chunks handed over (see {@link update}) leave the caller's thread with their memory, so the caller has
   * no garbage of them to collect; false for a hash computed on the calling thread.
   */
  readonly takesChunks: boolean;
  /**
   * Adds bytes, in order. A promise means: wait for it before adding more (the thread holds as many batches as it
   * may). With `handOver` the caller gives the chunk's memory away: it never reads or writes the chunk again, and
   * nothing else holds it (the chunk may be emptied: its memory transferred to the hashing thread).
   */
  update(chunk: Buffer, handOver?: boolean): Promise<void> | undefined;
  /** The request's bytes have all been added: hands on what is buffered, so no segment stays held between requests. */
  pause(): void;
  /** The hex digest of everything added; the hash is finished. Rejects if the worker failed (hash from storage then). */
  digest(): Promise<string>;
  /** Forgets the hash and whatever it holds. */
  dispose(): void;
}

/**
 * Messages to the worker (hash-thread.ts). An update's bytes are the first `lengths[i]` bytes of each of `parts`, in
 * order; the parts listed in `segments` (indexes) are to be handed back, the others are the worker's to drop.
 */
export type ToHashThread =
  | { op: 'update'; id: number; parts: ArrayBuffer[]; lengths: number[]; segments: number[] }
  | { op: 'digest'; id: number }
  | { op: 'drop'; id: number };
/** Messages from the worker: an update was hashed (its segments come back), or a digest. */
export type FromHashThread = { op: 'free'; segments: ArrayBuffer[] } | { op: 'digest'; id: number; hex: string };

const KiB = 1024;
/** Segments a thread keeps for reuse once hashed (the rest are let go): 1 MiB of 256 KiB segments. */
const SPARE_SEGMENTS = 4;

export interface HashThreadsOptions {
  /** Worker threads; 0 hashes everything on the calling thread. Default: one less than the CPUs, at most 4. */
  threads?: number;
  /**
   * Bytes per segment and the least a batch holds (default 256 KiB): the least an upload request carries before it
   * is hashed off-thread. Larger segments measured no faster (1 MiB: one message per MiB instead of four) and held
   * more memory.
   */
  segmentBytes?: number;
  /**
   * Batches handed to a thread and not yet hashed (default 16, 4 MiB of 256 KiB batches): an upload that fills one
   * more waits. Each upload also holds the batch it is filling. With 4, a push waited for its hash ~900 times per
   * 256 MiB (the thread keeps pace on average, not from one socket read to the next), and each wait paused the body.
   */
  inflight?: number;
}

/** The default count of hashing threads for this machine. */
export function defaultHashThreads(): number {
  return Math.max(0, Math.min(4, availableParallelism() - 1));
}

/** Hashes for uploads, on a few worker threads started on first use. */
export class HashThreads {
  private readonly threads: (HashThread | undefined)[];
  private next = 0;
  private readonly segmentBytes: number;
  private readonly inflight: number;

  constructor(options: HashThreadsOptions = {}) {
    this.threads = new Array<HashThread | undefined>(options.threads ?? defaultHashThreads()).fill(undefined);
    this.segmentBytes = options.segmentBytes ?? 256 * KiB;
    this.inflight = options.inflight ?? 16;
  }

  /** A new running sha256. */
  create(): RunningHash {
    if (this.threads.length === 0) return new LocalHash();
    return new ThreadHash(this.thread(this.next++ % this.threads.length));
  }

  /** The `i`th worker thread, made anew when it has not been made or has failed. */
  private thread(i: number): HashThread {
    let thread = this.threads[i];
    if (!thread || thread.failed) {
      thread = new HashThread(this.segmentBytes, this.inflight);
      this.threads[i] = thread;
    }
    return thread;
  }

  /**
   * Starts the first worker thread now rather than on the first upload that fills a batch: a thread's start (Node's
   * bootstrap of a new isolate, ~0.1 s of CPU here) otherwise lands on that upload, on the core it needs for itself.
   * The thread is idle until used and never holds up the process's exit.
   */
  warm(): void {
    if (this.threads.length > 0) this.thread(0).warm();
  }

  /** Stops the worker threads (pending digests reject). */
  async close(): Promise<void> {
    const threads = this.threads.filter((t) => t !== undefined);
    this.threads.fill(undefined);
    await Promise.all(threads.map((t) => t.close()));
  }
}

/** A hash on the calling thread. */
class LocalHash implements RunningHash {
  readonly takesChunks = false;
  private readonly hash: Hash = createHash('sha256');
  update(chunk: Buffer): undefined {
    this.hash.update(chunk);
    return undefined;
  }
  pause(): void {}
  digest(): Promise<string> {
    return Promise.resolve(this.hash.digest('hex'));
  }
  dispose(): void {}
}

/** One worker thread, its segments and the digests it owes. */
class HashThread {
  private worker: Worker | undefined;
  private readonly spare: Buffer[] = [];
  /** Batches handed to the worker and not hashed yet. */
  private away = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly digests = new Map<number, { resolve: (hex: string) => void; reject: (err: Error) => void }>();
  private lastId = 0;
  failed: Error | undefined;

  constructor(
    readonly segmentBytes: number,
    private readonly maxAway: number,
  ) {}

  newId(): number {
    return ++this.lastId;
  }

  /** A segment to fill: a spare one, or a new one. */
  take(): Buffer {
    // Its own ArrayBuffer (not from Node's pool): only such a buffer can be transferred.
    return this.spare.pop() ?? Buffer.allocUnsafeSlow(this.segmentBytes);
  }

  /** Takes back a segment not handed over (or back from the worker); beyond {@link SPARE_SEGMENTS} it is let go. */
  give(segment: Buffer): void {
    if (this.spare.length < SPARE_SEGMENTS) this.spare.push(segment);
  }

  /** True when another batch may be handed to the worker now (else wait with {@link whenBack}). */
  get ready(): boolean {
    return this.away < this.maxAway || this.failed !== undefined;
  }

  /** Resolves when the worker finished a batch (or the thread failed). */
  whenBack(): Promise<void> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Hands a batch to the worker for hash `id` (see {@link ToHashThread}); its parts are transferred, not copied. */
  update(id: number, parts: ArrayBuffer[], lengths: number[], segments: number[]): void {
    this.away++;
    this.busy();
    this.start().postMessage({ op: 'update', id, parts, lengths, segments } satisfies ToHashThread, parts);
  }

  /** Starts the worker if it has not started (it stays unref'd: idle). */
  warm(): void {
    this.start();
  }

  drop(id: number): void {
    this.start().postMessage({ op: 'drop', id } satisfies ToHashThread);
  }

  digest(id: number): Promise<string> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.digests.set(id, { resolve, reject });
      this.busy();
      this.start().postMessage({ op: 'digest', id } satisfies ToHashThread);
    });
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(new URL('./hash-thread.js', import.meta.url));
    worker.once('online', reapplyHeapTuning);
    worker.on('message', (message: FromHashThread) => {
      if (message.op === 'free') {
        this.away--;
        for (const segment of message.segments) this.give(Buffer.from(segment));
        this.waiting.shift()?.();
      } else {
        const pending = this.digests.get(message.id);
        this.digests.delete(message.id);
        pending?.resolve(message.hex);
      }
      this.idleIfDone();
    });
    worker.on('error', (err) => this.fail(err));
    worker.on('exit', (code) => this.fail(new Error(`hash thread exited (${code})`)));
    // An idle thread does not keep the process alive (see busy()). After the listeners: adding a 'message' listener
    // refs the worker again.
    worker.unref();
    this.worker = worker;
    return worker;
  }

  /**
   * While batches or digests are out, the thread keeps the process alive (a command awaiting a digest has nothing
   * else to); idle, it does not, so it never holds up an exit.
   */
  private busy(): void {
    if (this.away + this.digests.size === 1) this.start().ref();
  }

  private idleIfDone(): void {
    if (this.away + this.digests.size === 0) this.worker?.unref();
  }

  private fail(err: Error): void {
    this.failed ??= err;
    for (const pending of this.digests.values()) pending.reject(this.failed);
    this.digests.clear();
    this.away = 0;
    this.worker?.unref();
    for (const wake of this.waiting.splice(0)) wake();
  }

  async close(): Promise<void> {
    this.fail(new Error('hash threads closed'));
    await this.worker?.terminate();
  }
}

/** A chunk whose memory is all its own (no offset into, or tail of, a larger buffer), so it can be transferred whole. */
function ownsItsMemory(chunk: Buffer): boolean {
  return chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength && chunk.buffer instanceof ArrayBuffer;
}

/** A hash kept by a {@link HashThread}; on the calling thread when a request's bytes never fill a batch. */
class ThreadHash implements RunningHash {
  readonly takesChunks = true;
  private readonly id: number;
  private local: Hash | undefined;
  /** The segment being filled with copied bytes. */
  private segment: Buffer | undefined;
  private fill = 0;
  /** The batch for the worker: parts in order, their lengths, which of them are segments, and its bytes. */
  private parts: ArrayBuffer[] = [];
  private lengths: number[] = [];
  private segments: number[] = [];
  private batchBytes = 0;
  /** The worker holds part of this hash's state. */
  private remote = false;
  private done = false;

  constructor(private readonly thread: HashThread) {
    this.id = thread.newId();
  }

  update(chunk: Buffer, handOver = false): Promise<void> | undefined {
    if (this.local) {
      this.local.update(chunk);
      return undefined;
    }
    // After a worker failure the bytes are dropped: the digest rejects and the caller hashes from storage.
    if (this.thread.failed) return undefined;
    if (handOver && ownsItsMemory(chunk)) {
      this.closeSegment();
      this.add(chunk.buffer as ArrayBuffer, chunk.length, false);
      return this.sendWhenFull();
    }
    return this.copy(chunk, 0);
  }

  private copy(chunk: Buffer, from: number): Promise<void> | undefined {
    let off = from;
    while (off < chunk.length) {
      if (this.thread.failed) return undefined;
      if (this.batchBytes >= this.thread.segmentBytes) {
        // A full batch, and the worker has as many as it may: wait for one to be done.
        if (!this.thread.ready) {
          const resume = off;
          return this.thread.whenBack().then(() => this.copy(chunk, resume));
        }
        this.send();
      }
      if (!this.segment) {
        this.segment = this.thread.take();
        this.fill = 0;
      }
      const n = Math.min(chunk.length - off, this.segment.length - this.fill);
      chunk.copy(this.segment, this.fill, off, off + n);
      this.fill += n;
      off += n;
      if (this.fill === this.segment.length) this.closeSegment();
    }
    if (this.batchBytes >= this.thread.segmentBytes && this.thread.ready) this.send();
    return undefined;
  }

  /** Sends the batch once it holds a segment's worth and the worker may take it. */
  private sendWhenFull(): Promise<void> | undefined {
    if (this.batchBytes < this.thread.segmentBytes || this.thread.failed) return undefined;
    if (this.thread.ready) {
      this.send();
      return undefined;
    }
    return this.thread.whenBack().then(() => this.sendWhenFull());
  }

  private add(part: ArrayBuffer, length: number, segment: boolean): void {
    if (segment) this.segments.push(this.parts.length);
    this.parts.push(part);
    this.lengths.push(length);
    this.batchBytes += length;
  }

  /** Moves what the segment holds into the batch (an empty segment goes back to the spares). */
  private closeSegment(): void {
    if (!this.segment) return;
    if (this.fill > 0) this.add(this.segment.buffer as ArrayBuffer, this.fill, true);
    else this.thread.give(this.segment);
    this.segment = undefined;
    this.fill = 0;
  }

  private send(): void {
    if (this.parts.length === 0) return;
    this.thread.update(this.id, this.parts, this.lengths, this.segments);
    this.remote = true;
    this.clearBatch();
  }

  private clearBatch(): void {
    this.parts = [];
    this.lengths = [];
    this.segments = [];
    this.batchBytes = 0;
  }

  /** Gives the batch's segments back to the thread's spares and forgets the batch. */
  private dropBatch(): void {
    for (const i of this.segments) this.thread.give(Buffer.from(this.parts[i]!));
    this.clearBatch();
  }

  pause(): void {
    this.closeSegment();
    if (this.parts.length === 0) return;
    if (this.remote) {
      this.send();
      return;
    }
    // Not one full batch so far: this hash stays on the calling thread from here on.
    const local = createHash('sha256');
    for (let i = 0; i < this.parts.length; i++) local.update(new Uint8Array(this.parts[i]!, 0, this.lengths[i]));
    this.local = local;
    this.dropBatch();
  }

  digest(): Promise<string> {
    if (this.done) return Promise.reject(new Error('digest already taken'));
    this.pause();
    this.done = true;
    if (!this.remote) return Promise.resolve((this.local ?? createHash('sha256')).digest('hex'));
    return this.thread.digest(this.id);
  }

  dispose(): void {
    this.closeSegment();
    this.dropBatch();
    if (this.remote && !this.done && !this.thread.failed) this.thread.drop(this.id);
    this.done = true;
  }
}
