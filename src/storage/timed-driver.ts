import type { Readable } from 'node:stream';
import type { FileInfo, FileWriter, SignalOption, StorageDriver, WalkOptions, WriterOptions, WriterState } from './driver.js';

/**
 * What a {@link TimedDriver} times, named as CNCF Distribution names its storage driver actions (the `action` label
 * of registry:2's `registry_storage_action_seconds`). `Reader` and `Writer` are the time to open one, never the
 * transfer through it.
 */
export type StorageAction = 'GetContent' | 'PutContent' | 'Reader' | 'Writer' | 'Stat' | 'List' | 'Move' | 'Delete' | 'URLFor';

/** Told how long each timed call took, in seconds, whether it succeeded or failed. */
export type ActionObserver = (action: StorageAction, seconds: number) => void;

/**
 * A {@link StorageDriver} that reports how long each call to the driver below takes. One clock reading before the
 * call and one when it settles: nothing per chunk, so streamed blobs cost the same as without it. Walks (whose
 * duration is the consumer's pace) and health checks are passed through untimed.
 */
export class TimedDriver implements StorageDriver {
  readonly name: string;
  readonly redirectExpirySeconds?: number;
  readonly abortStaleUploads?: (before: Date) => Promise<number>;
  readonly removeStaleTemporaryFiles?: (before: Date, options?: { dryRun?: boolean }) => Promise<string[]>;

  constructor(
    readonly inner: StorageDriver,
    private readonly observe: ActionObserver,
  ) {
    this.name = inner.name;
    if (inner.redirectExpirySeconds !== undefined) this.redirectExpirySeconds = inner.redirectExpirySeconds;
    if (inner.abortStaleUploads) this.abortStaleUploads = (before) => inner.abortStaleUploads!(before);
    if (inner.removeStaleTemporaryFiles) this.removeStaleTemporaryFiles = (before, options) => inner.removeStaleTemporaryFiles!(before, options);
  }

  /** Runs `call`, reporting its duration under `action` once it settles. */
  private timed<T>(action: StorageAction, call: () => Promise<T>): Promise<T> {
    const start = performance.now();
    const done = (): void => this.observe(action, (performance.now() - start) / 1000);
    let promise: Promise<T>;
    try {
      promise = call();
    } catch (err) {
      done();
      throw err;
    }
    promise.then(done, done);
    return promise;
  }

  getContent(path: string): Promise<Buffer> {
    return this.timed('GetContent', () => this.inner.getContent(path));
  }

  putContent(path: string, content: Buffer): Promise<void> {
    return this.timed('PutContent', () => this.inner.putContent(path, content));
  }

  reader(path: string, offset?: number, length?: number, options?: SignalOption): Promise<Readable> {
    return this.timed('Reader', () => this.inner.reader(path, offset, length, options));
  }

  writer(path: string, state?: WriterState, options?: WriterOptions): Promise<FileWriter> {
    return this.timed('Writer', () => this.inner.writer(path, state, options));
  }

  stat(path: string): Promise<FileInfo> {
    return this.timed('Stat', () => this.inner.stat(path));
  }

  list(path: string, options?: SignalOption): Promise<string[]> {
    return this.timed('List', () => this.inner.list(path, options));
  }

  walk(path: string, options?: WalkOptions): AsyncGenerator<FileInfo> {
    return this.inner.walk(path, options);
  }

  move(source: string, dest: string, options?: SignalOption): Promise<void> {
    return this.timed('Move', () => this.inner.move(source, dest, options));
  }

  delete(path: string): Promise<void> {
    return this.timed('Delete', () => this.inner.delete(path));
  }

  redirectURL(path: string, options: { method: 'GET' | 'HEAD'; expiresInSeconds: number }): Promise<string | null> {
    return this.timed('URLFor', () => this.inner.redirectURL(path, options));
  }

  health(): Promise<void> {
    return this.inner.health();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
