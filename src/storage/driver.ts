import type { Readable } from 'node:stream';

/**
 * The storage driver seam: a tiny file-system-like interface that every backend (filesystem, S3) implements.
 *
 * Paths are absolute, `/`-separated and driver-relative (`/docker/registry/v2/...`); a driver maps them under its
 * own root. Path components are `[A-Za-z0-9._-]+` and never `.` or `..`: {@link assertDriverPath} rejects anything
 * else, so no caller can reach outside the root.
 *
 * Contract (checked by `test/suites/driver-suite.ts`, which every driver runs):
 * - Content written through {@link StorageDriver.putContent} or a committed {@link FileWriter} is visible to readers
 *   all at once; a reader never sees a half-written file at its final path.
 * - Missing paths throw {@link PathNotFoundError}; a read offset past the end throws {@link InvalidOffsetError}.
 * - {@link StorageDriver.move} replaces the destination atomically (readers see the old or the new content).
 * - {@link StorageDriver.delete} removes a file or a whole directory tree.
 */
export interface StorageDriver {
  /** `filesystem` or `s3`. */
  readonly name: string;
  /** Reads a whole small file (links, timestamps). */
  getContent(path: string): Promise<Buffer>;
  /** Writes a whole small file atomically, creating parents. */
  putContent(path: string, content: Buffer): Promise<void>;
  /**
   * Streams `length` bytes (default: to the end) starting at `offset` (default 0). Aborting `signal` destroys the
   * stream with an `AbortError` whose `cause` is the signal's reason (and rejects the call with the reason when it
   * has not resolved yet).
   */
  reader(path: string, offset?: number, length?: number, options?: SignalOption): Promise<Readable>;
  /**
   * Opens a writer at `path`. A new writer truncates; a writer given the `state` a previous writer's
   * {@link FileWriter.close} returned continues after exactly the bytes that state records (any bytes a crashed
   * writer left beyond them are discarded), even in another process.
   */
  writer(path: string, state?: WriterState, options?: WriterOptions): Promise<FileWriter>;
  /** Size and modification time of a file, or `isDir` for a directory. */
  stat(path: string): Promise<FileInfo>;
  /** Full paths of the direct children of a directory. Throws PathNotFoundError when it does not exist. */
  list(path: string, options?: SignalOption): Promise<string[]>;
  /**
   * Every file and directory below `path` (not `path` itself), recursively, in byte-wise order of their
   * {@link walkKey}s: a file's key is its path, a directory's its path followed by `/`, so a directory comes right
   * before its contents and `/a/b-c` (`-` < `/`) before the directory `/a/b`. Only entries whose key is greater
   * than `startAfter` are yielded, and subtrees that hold only earlier keys are not read at all: passing the key
   * of the last entry seen resumes a walk. Directories for which `skip` returns true are yielded but not entered.
   * Throws PathNotFoundError (on the first `next()`) when `path` does not exist. Aborting `signal` rejects the
   * next step with the signal's reason. Drivers with implied directories (S3) yield only non-empty directories,
   * with `size` 0 and `modTime` of the epoch.
   */
  walk(path: string, options?: WalkOptions): AsyncGenerator<FileInfo>;
  /**
   * Moves a file, replacing the destination atomically. Aborting `signal` stops a long (multipart) copy. The
   * filesystem driver also moves a directory to a path where nothing is (a rename; the upload data store keeps
   * completed uploads' folders that way).
   */
  move(source: string, dest: string, options?: SignalOption): Promise<void>;
  /** Deletes a file or a directory tree. Throws PathNotFoundError when nothing is there. */
  delete(path: string): Promise<void>;
  /** A URL a client may fetch the file from directly (e.g. a presigned S3 URL), or null when unsupported. */
  redirectURL(path: string, options: { method: 'GET' | 'HEAD'; expiresInSeconds: number }): Promise<string | null>;
  /** How long URLs from {@link redirectURL} stay valid (drivers that redirect; default 20 minutes). */
  readonly redirectExpirySeconds?: number;
  /**
   * Drivers that keep server-side state for unfinished writers (S3 multipart uploads) remove what was started
   * before `before` and never committed; returns how many were removed. Called by upload purging.
   */
  abortStaleUploads?(before: Date): Promise<number>;
  /**
   * Drivers that write through temporary files (filesystem: `<name>.tmp-<hex>~` beside the target, then a rename)
   * remove those a killed process left behind, when last modified before `before`; with `dryRun` they are only
   * listed. Returns where each one was (the driver path of the file being written, a `.tmp-…` suffix added). Called
   * by upload purging and `berth fsck --repair`.
   */
  removeStaleTemporaryFiles?(before: Date, options?: { dryRun?: boolean }): Promise<string[]>;
  /** Resolves when the backend is reachable; used by the readiness probe. */
  health(): Promise<void>;
  /** Releases clients and timers. */
  close(): Promise<void>;
}

/** An `AbortSignal` for a long driver call. */
export interface SignalOption {
  signal?: AbortSignal;
}

/** Options of {@link StorageDriver.walk}. */
export interface WalkOptions extends SignalOption {
  /** Only entries whose {@link walkKey} is byte-wise greater than this string. */
  startAfter?: string;
  /** Directories not to descend into (they are still yielded). */
  skip?: (dir: FileInfo) => boolean;
}

/** The key {@link StorageDriver.walk} orders and resumes by: the path, with a `/` appended for a directory. */
export function walkKey(info: Pick<FileInfo, 'path' | 'isDir'>): string {
  return info.isDir ? `${info.path}/` : info.path;
}

/** Byte-wise comparison of two ASCII strings (what driver paths are). */
export function compareBytes(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * How old a temporary file must be before it counts as left behind by an interrupted write: a write of a small file
 * (a link, a manifest) takes milliseconds, so one untouched for this long belongs to no running process.
 */
export const STALE_TEMPORARY_FILE_AGE_MS = 5 * 60 * 1000;

export interface FileInfo {
  path: string;
  size: number;
  modTime: Date;
  isDir: boolean;
}

/** How a file will be used while its writer writes it. */
export interface WriterOptions {
  /**
   * False when nothing reads the file before its writer has closed (an upload's data, read only once the request
   * ends): the driver may then write parts of it out of order, so the file may hold a hole while the writer is open.
   * Default true: a reader may follow the file as it grows, and it only ever holds a prefix of what was written.
   */
  followed?: boolean;
}

/** JSON-serialisable state a writer needs to continue later, kept in the upload session (possibly in Redis). */
export type WriterState = { size: number } & Record<string, unknown>;

/**
 * An open writer. Writes are sequential; `write` resolves when the driver can take more (back-pressure).
 * After `commit` the content is readable at the path; after `cancel` nothing of it remains. Where the path is
 * readable while the writer writes (the filesystem), it holds at most a prefix of what was written, never a hole: a
 * reader following the file as it grows (another process's pull-through fill) never reads bytes not there yet;
 * unless the writer was opened with `followed: false` ({@link WriterOptions}). After `close` (or `commit`) the file
 * holds exactly what was written, either way.
 */
export interface FileWriter {
  /** Bytes written so far, including those from a resumed state. */
  readonly size: number;
  /**
   * True when `write` has copied the chunk's bytes by the time its promise resolves (and keeps no reference to it):
   * the caller may then reuse the chunk's memory or hand it to another thread. A writer that queues chunks and writes
   * them later leaves this unset.
   */
  readonly copiesChunks?: boolean;
  write(chunk: Buffer): Promise<void>;
  /** Flushes and returns the state from which a later writer (any process) resumes. */
  close(): Promise<WriterState>;
  /** Flushes and makes the whole content readable at the path. */
  commit(): Promise<void>;
  /** Discards everything this writer (and the states it resumed from) wrote. */
  cancel(): Promise<void>;
}

export class PathNotFoundError extends Error {
  constructor(readonly path: string) {
    super(`path not found: ${path}`);
    this.name = 'PathNotFoundError';
  }
}

export class InvalidOffsetError extends Error {
  constructor(
    readonly path: string,
    readonly offset: number,
  ) {
    super(`invalid offset ${offset} for ${path}`);
    this.name = 'InvalidOffsetError';
  }
}

export class InvalidPathError extends Error {
  constructor(readonly path: string) {
    super('invalid storage path');
    this.name = 'InvalidPathError';
  }
}

const COMPONENT = /^[A-Za-z0-9._-]+$/;

/** Throws InvalidPathError unless `path` is `/` or `/`-joined safe components (never `.` or `..`). */
export function assertDriverPath(path: string): void {
  if (path === '/') return;
  if (!path.startsWith('/') || path.endsWith('/')) throw new InvalidPathError(path);
  for (const c of path.slice(1).split('/')) {
    if (!COMPONENT.test(c) || c === '.' || c === '..') throw new InvalidPathError(path);
  }
}

/**
 * A reader that can send its bytes without a new buffer per chunk. After {@link recycleBuffersWhenPiped}, `pipe(dest)`
 * passes each chunk to `dest.write` with a callback and overwrites that buffer once the callback has run, so call it
 * only for a destination that is done with a chunk by then — one that copies it out (a socket, an HTTP response),
 * never one that keeps or forwards it (a PassThrough, a collector). Other uses of the stream are unaffected.
 */
export interface RecyclingReadable extends Readable {
  recycleBuffersWhenPiped(): void;
  /** Bytes read from storage so far (all of the range once the stream has ended). */
  readonly bytesRead: number;
}

/** True when `stream` is a {@link RecyclingReadable}. */
export function canRecycleBuffers(stream: Readable): stream is RecyclingReadable {
  return typeof (stream as Partial<RecyclingReadable>).recycleBuffersWhenPiped === 'function';
}

export function isNotFound(err: unknown): err is PathNotFoundError {
  return err instanceof PathNotFoundError;
}
