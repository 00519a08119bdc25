import { constants } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { InvalidOffsetError, type FileWriter, type WriterState } from '../driver.js';

/**
 * Writing blob data around the page cache (`O_DIRECT`).
 *
 * A buffered write of a new file copies every byte into freshly allocated page-cache pages and leaves them dirty for
 * the kernel to write back later; on the machine measured (a virtual machine, ext4) that cost more CPU than hashing
 * the bytes: `dd` of 256 MiB took 0.6-0.9 s of system time, against 0.04 s with `O_DIRECT` from aligned memory (at
 * 1.4-2 GB/s), and the write-back then competes with the next requests. A registry's blobs are written once and read
 * later, often by other hosts, so keeping them out of the page cache while they arrive also keeps the cache for what
 * is being pulled. The price: the first read of a freshly pushed blob comes from the disk (0.5 s of system time for
 * 256 MiB here, paid once; a buffered write paid it up front).
 *
 * `O_DIRECT` wants the memory, the file position and the length aligned (to the device's logical block; 4096 covers
 * every device). Node's Buffers carry no alignment guarantee; a WebAssembly memory's backing store is whole pages
 * from the operating system, so blocks are carved out of such memories. Whatever refuses `O_DIRECT` (a file system
 * without it, a stricter alignment) makes the writer fall back to ordinary buffered writes; nothing is lost.
 */

/** Alignment of positions, lengths and memory of direct writes. */
export const DIRECT_ALIGN = 4096;

/** `O_DIRECT` where the platform has it (Linux), else undefined. */
export const O_DIRECT: number | undefined = (constants as Record<string, number | undefined>).O_DIRECT;

const WASM_PAGE = 64 * 1024;

/** The one WebAssembly type used here (Node has it; the project's type libraries do not declare it). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
const Wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => WasmMemory } }).WebAssembly;

/**
 * A bounded pool of page-aligned blocks. A writer takes all the blocks it needs at once or none (then it writes
 * through the page cache): memory never grows past `maxBlocks` blocks, and no writer waits for another.
 */
export class AlignedBlocks {
  private readonly free: Buffer[] = [];
  private made = 0;

  constructor(
    readonly blockSize: number,
    private maxBlocks: number,
    /** Blocks made per WebAssembly memory (one memory per slab keeps the count of memories small). */
    private readonly slabBlocks = 8,
  ) {
    if (blockSize % WASM_PAGE !== 0) throw new Error(`block size must be a multiple of ${WASM_PAGE}`);
  }

  /** `n` blocks, or undefined when the pool cannot give that many. */
  take(n: number): Buffer[] | undefined {
    while (this.free.length < n && this.made < this.maxBlocks) {
      if (!this.grow()) break;
    }
    if (this.free.length < n) return undefined;
    return this.free.splice(this.free.length - n, n);
  }

  give(blocks: Buffer[]): void {
    for (const b of blocks) this.free.push(b);
  }

  /** Makes one more slab of blocks; false (and no more tries) when the memory cannot be had. */
  private grow(): boolean {
    const count = Math.min(this.slabBlocks, this.maxBlocks - this.made);
    let memory: ArrayBuffer;
    try {
      memory = this.allocate(count * this.blockSize);
    } catch {
      // V8 reserves address space for each WebAssembly memory (gigabytes of it, with guard regions): under a tight
      // `ulimit -v` that fails. Writers then use the page cache; nothing else changes.
      this.maxBlocks = this.made;
      return false;
    }
    for (let i = 0; i < count; i++) this.free.push(Buffer.from(memory, i * this.blockSize, this.blockSize));
    this.made += count;
    return true;
  }

  /** Page-aligned memory of `bytes` (a multiple of 64 KiB). */
  protected allocate(bytes: number): ArrayBuffer {
    const pages = bytes / WASM_PAGE;
    // A fixed-size memory: never grown, so its buffer is never detached under a write in flight.
    return new Wasm.Memory({ initial: pages, maximum: pages }).buffer;
  }
}

/** Errors by which a file system or device refuses a direct write (it is then written through the page cache). */
export function refusesDirect(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'EINVAL' || code === 'EOPNOTSUPP' || code === 'ENOTSUP';
}

/**
 * A second descriptor of the file `buffered` has open, with `O_DIRECT`; undefined when the file system refuses it or
 * the path no longer names the same file.
 */
export async function openDirect(fullPath: string, buffered: FileHandle, nofollow: number): Promise<FileHandle | undefined> {
  if (O_DIRECT === undefined) return undefined;
  let direct: FileHandle;
  try {
    direct = await open(fullPath, constants.O_WRONLY | O_DIRECT | nofollow);
  } catch (err) {
    if (refusesDirect(err)) return undefined;
    throw err;
  }
  try {
    const [a, b] = await Promise.all([buffered.stat({ bigint: true }), direct.stat({ bigint: true })]);
    if (a.ino === b.ino && a.dev === b.dev) return direct;
  } catch {
    // fall through: closed below, buffered writes only
  }
  await direct.close();
  return undefined;
}

/** Bytes of one block of a direct writer (2 MiB). */
export const DIRECT_BLOCK = 2 * 1024 * 1024;
/** The blocks of all direct writers of the process: at most 72 MiB, so up to 12 writers at once write direct. */
export const processDirectBlocks = new AlignedBlocks(DIRECT_BLOCK, 36);

export interface DirectWriterOptions {
  pool: AlignedBlocks;
  nofollow: number;
  onRefused: (err: unknown) => void;
  /**
   * Write the blocks one at a time, in order (default), so the file only ever holds a prefix of what was written; with
   * false (nothing reads the file before the writer closes) two blocks are written at once.
   */
  inOrder?: boolean;
}

/**
 * A writer that copies what it receives into page-aligned blocks and writes each full block with `O_DIRECT` at its
 * (aligned) position while the next one fills. In order (the default), one block is written at a time: the file
 * only ever grows by whole written bytes, never past a hole, so a reader following it as it grows (a pull-through
 * fill) reads nothing that is not yet there. Out of order, it holds three blocks and writes two at once: the virtual
 * disk measured here took 2 MiB direct writes one at a time more slowly than a push arrives (a push's waits for the
 * disk: ~110 ms per 256 MiB with one write in flight, ~60 with two), and the file may hold a hole until the earlier
 * write lands. The last partial block is written through the page cache when the writer closes. A writer resumed
 * inside a block first reads that block's head back from the file, so every direct write starts at an aligned
 * position. The `O_DIRECT` descriptor is opened with the first full block, so an upload smaller than a block (a
 * config blob, a small chunk) costs no more system calls than a buffered one. When the file system refuses a direct
 * open or write, that block and every later one go through the page cache instead (`onRefused` is told once).
 * Memory: two or three blocks, whatever the blob's size; a failed write is reported by the next `write` or by
 * `close`, and a writer that failed never writes its last partial block.
 */
export class DirectFileWriter implements FileWriter {
  private block: Buffer;
  /** Blocks free to fill. */
  private readonly spare: Buffer[];
  private fill: number;
  /** File position of the filling block's first byte (aligned). */
  private blockStart: number;
  /** Writes of full blocks under way, oldest first. */
  private readonly writing = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;
  private refused = false;
  private closed = false;
  /** The `O_DIRECT` descriptor, opened with the first full block (undefined inside: refused). */
  private direct: Promise<FileHandle | undefined> | undefined;

  private constructor(
    private readonly handle: FileHandle,
    private readonly nofollow: number,
    private readonly fullPath: string,
    private readonly pool: AlignedBlocks,
    private readonly blocks: Buffer[],
    startSize: number,
    private readonly onRefused: (err: unknown) => void,
    /** Writes of full blocks under way at most. */
    private readonly maxWriting: number,
  ) {
    this.block = blocks[0]!;
    this.spare = blocks.slice(1);
    this.blockStart = startSize - (startSize % DIRECT_ALIGN);
    this.fill = startSize - this.blockStart;
  }

  /**
   * A direct writer appending to the file `handle` has open at `startSize`; undefined when the pool has no blocks to
   * spare (then write through `handle` as usual). The writer owns `handle`. Out of order it takes three blocks, or two
   * (and writes one at a time) when the pool has no more.
   */
  static async open(handle: FileHandle, fullPath: string, startSize: number, options: DirectWriterOptions): Promise<DirectFileWriter | undefined> {
    const inOrder = options.inOrder !== false;
    const blocks = (inOrder ? undefined : options.pool.take(3)) ?? options.pool.take(2);
    if (!blocks) return undefined;
    const writer = new DirectFileWriter(handle, options.nofollow, fullPath, options.pool, blocks, startSize, options.onRefused, blocks.length - 1);
    try {
      if (writer.fill > 0) {
        const { bytesRead } = await handle.read(writer.block, 0, writer.fill, writer.blockStart);
        if (bytesRead !== writer.fill) throw new InvalidOffsetError(fullPath, startSize);
      }
      return writer;
    } catch (err) {
      options.pool.give(blocks);
      throw err;
    }
  }

  get size(): number {
    return this.blockStart + this.fill;
  }

  /** Every chunk is copied into an aligned block before `write` resolves. */
  readonly copiesChunks = true;

  async write(chunk: Buffer): Promise<void> {
    if (this.closed) throw new Error('writer is closed');
    this.throwIfFailed();
    let off = 0;
    while (off < chunk.length) {
      const n = Math.min(chunk.length - off, this.block.length - this.fill);
      chunk.copy(this.block, this.fill, off, off + n);
      this.fill += n;
      off += n;
      if (this.fill === this.block.length) await this.submit();
    }
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }

  /**
   * Starts writing the full block and goes on filling a free one; first waits for the oldest write while as many are
   * under way as may be (back-pressure).
   */
  private async submit(): Promise<void> {
    while (this.writing.size >= this.maxWriting || this.spare.length === 0) await this.writing.values().next().value;
    this.throwIfFailed();
    const block = this.block;
    const write: Promise<void> = this.writeBlock(block, this.blockStart)
      .catch((error: unknown) => {
        this.failure ??= { error };
      })
      .finally(() => {
        this.writing.delete(write);
        this.spare.push(block);
      });
    this.writing.add(write);
    this.blockStart += block.length;
    this.fill = 0;
    this.block = this.spare.pop()!;
  }

  private async writeBlock(block: Buffer, position: number): Promise<void> {
    let done = 0;
    const direct = this.refused ? undefined : await (this.direct ??= openDirect(this.fullPath, this.handle, this.nofollow));
    if (!direct && !this.refused) this.refuse(new Error('open with O_DIRECT refused'));
    if (direct && !this.refused) {
      try {
        // A short direct write (the disk filled up, say) leaves the rest to the page cache path, which reports why.
        while (done < block.length) {
          const { bytesWritten } = await direct.write(block, done, block.length - done, position + done);
          done += bytesWritten;
          if (bytesWritten === 0 || bytesWritten % DIRECT_ALIGN !== 0) break;
        }
      } catch (err) {
        if (!refusesDirect(err)) throw err;
        this.refuse(err);
      }
    }
    await writeAll(this.handle, block.subarray(done), position + done);
  }

  private refuse(err: unknown): void {
    if (!this.refused) this.onRefused(err);
    this.refused = true;
  }

  private async release(): Promise<void> {
    const direct = await this.direct?.catch(() => undefined);
    await direct?.close().catch(() => undefined);
    await this.handle.close();
    this.pool.give(this.blocks);
  }

  async close(): Promise<WriterState> {
    if (!this.closed) {
      this.closed = true;
      try {
        await Promise.all(this.writing);
        this.throwIfFailed();
        await writeAll(this.handle, this.block.subarray(0, this.fill), this.blockStart);
      } finally {
        await this.release();
      }
    }
    return { size: this.blockStart + this.fill };
  }

  async commit(): Promise<void> {
    await this.close();
  }

  async cancel(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await Promise.all(this.writing);
      await this.release();
    }
    await rm(this.fullPath, { force: true });
  }
}

/** Writes all of `bytes` at `position` (through the page cache). */
async function writeAll(handle: FileHandle, bytes: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}
