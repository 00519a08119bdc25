import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, realpath, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import { addAbortSignal, Readable } from 'node:stream';
import type { Dirent } from 'node:fs';
import {
  assertDriverPath,
  InvalidOffsetError,
  InvalidPathError,
  PathNotFoundError,
  type FileInfo,
  type FileWriter,
  type SignalOption,
  type StorageDriver,
  type WalkOptions,
  type WriterOptions,
  type WriterState,
} from '../driver.js';
import { FileReadStream } from './file-read-stream.js';
import { BufferedFileWriter } from './buffered-writer.js';
import { DirectFileWriter, O_DIRECT, processDirectBlocks, type AlignedBlocks } from './direct-writes.js';

/** Options of {@link FilesystemDriver}. */
export interface FilesystemDriverOptions {
  /** Host directory the driver path `/` maps to (created when missing). */
  rootDirectory: string;
  /**
   * Writers write blob data around the page cache (`O_DIRECT`, see direct-writes.ts) where the platform and the file
   * system allow it (default true). Small files (links, manifests) are always written through the page cache.
   */
  directWrites?: boolean;
  /** Told once when the file system refuses direct writes; writers use the page cache from then on. */
  onDirectWritesRefused?: (err: unknown) => void;
  /** The aligned blocks direct writers take (default: the process's pool). */
  directBlocks?: AlignedBlocks;
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as NodeJS.ErrnoException).code;
  return code !== undefined && codes.includes(code);
}

/** Errors meaning "nothing (readable) is at this path". */
const MISSING = ['ENOENT', 'ENOTDIR'];

/** How often an operation that lost a race against a concurrent delete or write of the same directory is retried. */
const RACE_RETRIES = 10;

/** `O_NOFOLLOW` where the platform has it: a writer never writes through a symlink at its final path component. */
const NOFOLLOW = constants.O_NOFOLLOW ?? 0;

/**
 * Suffix of temporary files. `~` is outside the driver path alphabet, so a temporary file can never collide with
 * (or be listed as) a real driver path.
 */
const TMP_MARK = '.tmp-';
const TMP_END = '~';
/** The name of a temporary file: `<target>.tmp-<12 hex>~`. */
const TMP_NAME = /\.tmp-[0-9a-f]{12}~$/;

/** True when `name` can be a driver path component (temporary files and foreign names cannot). */
function isDriverName(name: string): boolean {
  try {
    assertDriverPath(`/${name}`);
    return true;
  } catch {
    return false;
  }
}

function isSafeOffset(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/**
 * The embedded default: files under `rootdirectory`, laid out exactly as registry:2 lays them out
 * (driver path `/a/b` is the host file `<root>/a/b`).
 *
 * Atomicity comes from write-to-temporary-then-rename within the same directory. Every operation resolves the real
 * host location of what it touches and refuses (with {@link InvalidPathError}) anything that a symlink inside the
 * root would take outside it; symlinks that stay inside the root keep working.
 */
export class FilesystemDriver implements StorageDriver {
  readonly name = 'filesystem';
  readonly root: string;
  private realRootCache: string | undefined;

  private directWrites: boolean;
  private readonly directBlocks: AlignedBlocks;
  private readonly onDirectWritesRefused: ((err: unknown) => void) | undefined;

  constructor(options: FilesystemDriverOptions) {
    this.root = options.rootDirectory;
    this.directWrites = (options.directWrites ?? true) && O_DIRECT !== undefined;
    this.directBlocks = options.directBlocks ?? processDirectBlocks;
    this.onDirectWritesRefused = options.onDirectWritesRefused;
  }

  /** Whether new writers try `O_DIRECT` (false once the file system refused it). */
  get writesDirect(): boolean {
    return this.directWrites;
  }

  /** The host path for a driver path, after checking the driver path cannot escape the root. */
  fullPath(path: string): string {
    assertDriverPath(path);
    return join(this.root, path);
  }

  async getContent(path: string): Promise<Buffer> {
    const real = await this.resolveExisting(path);
    try {
      return await readFile(real);
    } catch (err) {
      if (isErrno(err, 'EISDIR', ...MISSING)) throw new PathNotFoundError(path);
      throw err;
    }
  }

  async putContent(path: string, content: Buffer): Promise<void> {
    // A concurrent delete of the parent (DELETE of a tag while it is being PUT) removes the directory between its
    // creation and the write or the rename (ENOENT): the directory is made again and the write retried, so the
    // writer wins or loses the race cleanly instead of failing.
    for (let attempt = 1; ; attempt++) {
      const full = await this.prepareTarget(path);
      const tmp = `${full}${TMP_MARK}${randomBytes(6).toString('hex')}${TMP_END}`;
      try {
        await writeFile(tmp, content, { flag: constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | NOFOLLOW });
        await rename(tmp, full);
        return;
      } catch (err) {
        await rm(tmp, { force: true });
        if (!isErrno(err, 'ENOENT') || attempt >= RACE_RETRIES) throw err;
      }
    }
  }

  async reader(path: string, offset = 0, length?: number, options: SignalOption = {}): Promise<Readable> {
    options.signal?.throwIfAborted();
    if (!isSafeOffset(offset)) {
      assertDriverPath(path);
      throw new InvalidOffsetError(path, offset);
    }
    if (length !== undefined && !isSafeOffset(length)) {
      assertDriverPath(path);
      throw new InvalidOffsetError(path, offset + length);
    }
    const real = await this.resolveExisting(path);
    let handle: FileHandle;
    try {
      handle = await open(real, 'r');
    } catch (err) {
      if (isErrno(err, ...MISSING)) throw new PathNotFoundError(path);
      throw err;
    }
    try {
      const info = await handle.stat();
      if (info.isDirectory()) throw new PathNotFoundError(path);
      if (offset > info.size) throw new InvalidOffsetError(path, offset);
      if (length === 0 || offset === info.size) {
        await handle.close();
        return Readable.from([]);
      }
      const stream = new FileReadStream(handle, offset, length === undefined ? Infinity : offset + length);
      return options.signal ? addAbortSignal(options.signal, stream) : stream;
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async writer(path: string, state?: WriterState, options?: WriterOptions): Promise<FileWriter> {
    if (state !== undefined && !isSafeOffset(state.size)) {
      assertDriverPath(path);
      throw new InvalidOffsetError(path, state.size);
    }
    const full = await this.prepareTarget(path);
    let handle: FileHandle;
    try {
      handle = await open(full, state ? constants.O_RDWR | NOFOLLOW : constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | NOFOLLOW, 0o666);
    } catch (err) {
      if (state && isErrno(err, 'ENOENT')) throw new PathNotFoundError(path);
      if (isErrno(err, 'ELOOP')) throw new InvalidPathError(path);
      throw err;
    }
    if (state) {
      try {
        const info = await handle.stat();
        if (info.size < state.size) throw new InvalidOffsetError(path, state.size);
        // Bytes past the recorded size come from a writer that never reported them: drop them.
        if (info.size > state.size) await handle.truncate(state.size);
      } catch (err) {
        await handle.close();
        throw err;
      }
    }
    if (this.directWrites) {
      try {
        const direct = await DirectFileWriter.open(handle, full, state?.size ?? 0, {
          pool: this.directBlocks,
          nofollow: NOFOLLOW,
          onRefused: (err) => this.directRefused(err),
          inOrder: options?.followed !== false,
        });
        if (direct) return direct;
      } catch (err) {
        await handle.close();
        throw err;
      }
    }
    return new BufferedFileWriter(handle, full, state?.size ?? 0);
  }

  private directRefused(err: unknown): void {
    if (!this.directWrites) return;
    this.directWrites = false;
    this.onDirectWritesRefused?.(err);
  }

  async stat(path: string): Promise<FileInfo> {
    const real = await this.resolveExisting(path);
    try {
      const s = await stat(real);
      return { path, size: s.isDirectory() ? 0 : s.size, modTime: s.mtime, isDir: s.isDirectory() };
    } catch (err) {
      if (isErrno(err, ...MISSING)) throw new PathNotFoundError(path);
      throw err;
    }
  }

  async list(path: string, options: SignalOption = {}): Promise<string[]> {
    options.signal?.throwIfAborted();
    const real = await this.resolveExisting(path);
    try {
      const entries = await readdir(real);
      const prefix = path === '/' ? '' : path;
      return entries.filter(isDriverName).map((e) => `${prefix}/${e}`);
    } catch (err) {
      if (isErrno(err, ...MISSING)) throw new PathNotFoundError(path);
      throw err;
    }
  }

  /** Sorted directory reads, one directory at a time; symlinks inside the root are followed once per chain. */
  async *walk(path: string, options: WalkOptions = {}): AsyncGenerator<FileInfo> {
    options.signal?.throwIfAborted();
    const real = await this.resolveExisting(path);
    let info;
    try {
      info = await stat(real);
    } catch (err) {
      if (isErrno(err, ...MISSING)) throw new PathNotFoundError(path);
      throw err;
    }
    if (!info.isDirectory()) throw new PathNotFoundError(path);
    yield* this.walkDir(path, real, options, new Set([real]));
  }

  private async *walkDir(path: string, real: string, options: WalkOptions, chain: Set<string>): AsyncGenerator<FileInfo> {
    options.signal?.throwIfAborted();
    let entries: Dirent[];
    try {
      entries = await readdir(real, { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, ...MISSING)) return; // removed while the walk was under way
      throw err;
    }
    const prefix = path === '/' ? '' : path;
    const after = options.startAfter;
    const items: Array<{ info: FileInfo; key: string; real: string }> = [];
    for (const e of entries) {
      if (!isDriverName(e.name)) continue;
      const childPath = `${prefix}/${e.name}`;
      let childReal = join(real, e.name);
      try {
        if (e.isSymbolicLink()) childReal = await this.resolveExisting(childPath);
        const s = await stat(childReal);
        const isDir = s.isDirectory();
        items.push({
          info: { path: childPath, size: isDir ? 0 : s.size, modTime: s.mtime, isDir },
          key: isDir ? `${childPath}/` : childPath,
          real: childReal,
        });
      } catch (err) {
        // Gone since the directory was read, or a symlink pointing outside the root: not part of the walk.
        if (isErrno(err, ...MISSING) || err instanceof PathNotFoundError || err instanceof InvalidPathError) continue;
        throw err;
      }
    }
    items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const item of items) {
      if (after !== undefined && item.key <= after) {
        // Earlier than the start: skipped, unless the start lies inside this directory.
        if (!item.info.isDir || !after.startsWith(item.key)) continue;
      } else {
        options.signal?.throwIfAborted();
        yield item.info;
      }
      if (!item.info.isDir || chain.has(item.real) || options.skip?.(item.info)) continue;
      chain.add(item.real);
      try {
        yield* this.walkDir(item.info.path, item.real, options, chain);
      } finally {
        chain.delete(item.real);
      }
    }
  }

  async move(source: string, dest: string, options: SignalOption = {}): Promise<void> {
    options.signal?.throwIfAborted();
    assertDriverPath(dest);
    const from = await this.resolveEntry(source);
    try {
      await lstat(from);
    } catch (err) {
      if (isErrno(err, ...MISSING)) throw new PathNotFoundError(source);
      throw err;
    }
    for (let attempt = 1; ; attempt++) {
      const to = await this.prepareTarget(dest);
      try {
        await rename(from, to);
        return;
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
        // ENOENT is the source gone, or the destination's directory removed by a concurrent delete: retry the latter.
        const sourceGone = await lstat(from).then(
          () => false,
          () => true,
        );
        if (sourceGone) throw new PathNotFoundError(source);
        if (attempt >= RACE_RETRIES) throw err;
      }
    }
  }

  async delete(path: string): Promise<void> {
    const target = await this.resolveEntry(path);
    try {
      await lstat(target);
    } catch (err) {
      if (isErrno(err, ...MISSING)) throw new PathNotFoundError(path);
      throw err;
    }
    // rm removes a symlink itself, never what it points at. A concurrent writer may add a file to a directory
    // while it is being removed (ENOTEMPTY): rm retries, so the delete still removes the whole tree.
    await rm(target, { recursive: true, force: true, maxRetries: RACE_RETRIES, retryDelay: 5 });
  }

  async redirectURL(path: string): Promise<string | null> {
    assertDriverPath(path);
    return null;
  }

  async removeStaleTemporaryFiles(before: Date, options: { dryRun?: boolean } = {}): Promise<string[]> {
    const root = await this.realRoot();
    const found: string[] = [];
    // Depth first over host directories, never following symlinks (a symlinked directory is not descended).
    const stack = [root];
    while (stack.length > 0) {
      const dir = stack.pop() as string;
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if (isErrno(err, ...MISSING)) continue; // removed meanwhile
        throw err;
      }
      for (const e of entries) {
        const host = join(dir, e.name);
        if (e.isDirectory()) {
          stack.push(host);
          continue;
        }
        if (!e.isFile() || !TMP_NAME.test(e.name)) continue;
        const info = await lstat(host).catch(() => null);
        if (!info || info.mtime >= before) continue;
        found.push(host.slice(root.length).split(sep).join('/'));
        if (!options.dryRun) await rm(host, { force: true });
      }
    }
    return found.sort();
  }

  async health(): Promise<void> {
    await mkdir(this.root, { recursive: true });
    await stat(this.root);
  }

  async close(): Promise<void> {}

  /** The real (symlink-free) host path of the root, created on first use. */
  private async realRoot(): Promise<string> {
    if (this.realRootCache === undefined) {
      await mkdir(this.root, { recursive: true });
      this.realRootCache = await realpath(this.root);
    }
    return this.realRootCache;
  }

  private async isInside(real: string): Promise<boolean> {
    const root = await this.realRoot();
    return real === root || real.startsWith(root.endsWith(sep) ? root : root + sep);
  }

  /** The real host path of an existing file or directory; PathNotFoundError when missing, refused when outside. */
  private async resolveExisting(path: string): Promise<string> {
    const full = this.fullPath(path);
    let real: string;
    try {
      real = await realpath(full);
    } catch (err) {
      if (isErrno(err, ...MISSING)) throw new PathNotFoundError(path);
      throw err;
    }
    if (!(await this.isInside(real))) throw new InvalidPathError(path);
    return real;
  }

  /**
   * The host path of the entry itself (its final component is not resolved, so a symlink there is the link, not its
   * target) in the real parent directory; PathNotFoundError when the parent is missing, refused when outside.
   */
  private async resolveEntry(path: string): Promise<string> {
    if (path === '/') throw new InvalidPathError(path);
    const full = this.fullPath(path);
    let parent: string;
    try {
      parent = await realpath(dirname(full));
    } catch (err) {
      if (isErrno(err, ...MISSING)) throw new PathNotFoundError(path);
      throw err;
    }
    if (!(await this.isInside(parent))) throw new InvalidPathError(path);
    return join(parent, basename(full));
  }

  /**
   * Like {@link resolveEntry} for a path about to be written: the deepest existing ancestor is checked to be inside
   * the root before the missing directories below it are created.
   */
  private async prepareTarget(path: string): Promise<string> {
    if (path === '/') {
      assertDriverPath(path);
      throw new InvalidPathError(path);
    }
    const full = this.fullPath(path);
    await this.realRoot();
    const missing: string[] = [];
    let existing = dirname(full);
    for (;;) {
      let real: string;
      try {
        real = await realpath(existing);
      } catch (err) {
        if (!isErrno(err, 'ENOENT') || existing === dirname(existing)) throw err;
        missing.unshift(basename(existing));
        existing = dirname(existing);
        continue;
      }
      if (!(await this.isInside(real))) throw new InvalidPathError(path);
      const parent = join(real, ...missing);
      if (missing.length > 0) {
        await mkdir(parent, { recursive: true }).catch(async (err: unknown) => {
          // Node's recursive mkdir reports ENOENT when the filesystem is read-only or full; one level without
          // `recursive` throws the real cause (EROFS, ENOSPC), which the error handler answers with 507.
          if (!isErrno(err, 'ENOENT')) throw err;
          await mkdir(join(real, missing[0] ?? '')).catch((e: unknown) => {
            if (!isErrno(e, 'EEXIST')) throw e;
          });
          await mkdir(parent, { recursive: true });
        });
      }
      return join(parent, basename(full));
    }
  }
}
