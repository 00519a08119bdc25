import { randomUUID } from 'node:crypto';
import { mkdir, open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { registryError, type RegistryError } from '../errors/registry-error.js';
import { digestFromHash, newHash, type Digest } from '../oci/digest.js';
import { isNotFound, type FileWriter, type StorageDriver } from '../storage/driver.js';
import { paths } from '../storage/paths.js';
import type { RegistryStore } from '../storage/registry-store.js';
import { UpstreamError, type UpstreamClient } from './upstream.js';

/** What a client learns once the upstream has answered: the blob's size when the upstream declared it. */
export interface FillInfo {
  size: number | undefined;
}

/** Bytes read from the spool per chunk handed to a client. */
const READ_CHUNK = 1024 * 1024;

/**
 * One in-flight download of an uncached blob, shared by every client asking for it (single-flight).
 *
 * The leader streams the upstream body into two places at once, awaiting both (back-pressure: the fill runs at the
 * speed of the slower of upstream and disk, memory stays bounded by a chunk): the storage driver's writer at a
 * temporary path under the cache repository's `_uploads/` (so the upload purger removes leftovers of a crash), and
 * a spool file on local disk (unlinked at once; only its descriptor is kept). Clients read the spool at their own
 * pace, starting at byte 0 or their range start, and wait for more bytes as they arrive, so every client gets bytes
 * as they come and a slow or vanished client never slows or aborts the fill for the others.
 *
 * The last byte is withheld from every client until the digest is verified; a failed, truncated or corrupt
 * transfer ends every client's response with an error (so no client mistakes it for a complete blob) and commits
 * nothing. On success the writer is committed, the file moved to `blobs/.../data` and linked into the repository.
 */
export class BlobFill {
  /** Resolves once the upstream answered 200 and the spool is ready; rejects with the error for the client. */
  readonly ready: Promise<FillInfo>;
  /** Resolves when the fill is over (committed or failed); never rejects. */
  readonly finished: Promise<void>;
  private size: number | undefined;
  private spool: FileHandle | undefined;
  private spooled = 0;
  private verified = false;
  private failure: Error | undefined;
  private readers = 0;
  private over = false;
  private waiters: Array<() => void> = [];
  private readonly controller = new AbortController();

  constructor(
    private readonly deps: { client: UpstreamClient; driver: StorageDriver; store: RegistryStore; logger: Logger; spoolDirectory: string },
    private readonly remoteName: string,
    private readonly localName: string,
    private readonly digest: Digest,
    private readonly onLinked: () => Promise<void>,
    private readonly onFinished: () => void,
  ) {
    let resolveReady!: (info: FillInfo) => void;
    let rejectReady!: (err: unknown) => void;
    this.ready = new Promise<FillInfo>((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    // A fill nobody waits on (every client left) must not raise an unhandled rejection.
    this.ready.catch(() => undefined);
    this.finished = this.run(resolveReady, rejectReady).catch((err: unknown) => {
      this.deps.logger.error({ err, digest: digest.value }, 'blob fill failed unexpectedly');
    });
  }

  /** Stops the download (server shutdown). */
  abort(): void {
    this.controller.abort(new Error('shutting down'));
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private waitForProgress(): Promise<void> {
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  private async run(resolveReady: (info: FillInfo) => void, rejectReady: (err: unknown) => void): Promise<void> {
    const { client, driver, store, logger } = this.deps;
    let res: Response;
    try {
      res = await client.request({ method: 'GET', repository: this.remoteName, path: `blobs/${this.digest.value}`, signal: this.controller.signal });
    } catch (err) {
      this.fail(toClientError(err, this.digest), rejectReady);
      return;
    }
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined);
      this.fail(
        registryError('BLOB_UNKNOWN', { digest: this.digest.value }, { message: `blob unknown to upstream ${client.name} (status ${res.status})` }),
        rejectReady,
      );
      return;
    }
    const declared = res.headers.get('content-length');
    this.size = declared !== null && /^\d+$/.test(declared) ? Number(declared) : undefined;
    const id = randomUUID();
    const tempPath = paths.uploadData(this.localName, id);
    let writer: FileWriter | undefined;
    try {
      await mkdir(this.deps.spoolDirectory, { recursive: true, mode: 0o700 });
      const spoolPath = join(this.deps.spoolDirectory, `${id}.spool`);
      this.spool = await open(spoolPath, 'wx+', 0o600);
      await unlink(spoolPath);
      await driver.putContent(paths.uploadStartedAt(this.localName, id), Buffer.from(new Date().toISOString()));
      writer = await driver.writer(tempPath);
    } catch (err) {
      await res.body?.cancel().catch(() => undefined);
      await writer?.cancel().catch(() => undefined);
      await this.removeTemp(id);
      this.fail(registryError('UNAVAILABLE', undefined, { message: 'cannot store the blob', cause: err }), rejectReady);
      return;
    }
    resolveReady({ size: this.size });

    const hash = newHash(this.digest.algorithm);
    const idle = this.deps.client.settings.timeoutMs;
    const timer = setTimeout(() => this.controller.abort(new Error(`no data from upstream for ${idle} ms`)), idle);
    const spool = this.spool;
    try {
      if (!res.body) throw new Error('upstream sent no body');
      for await (const part of res.body as AsyncIterable<Uint8Array>) {
        timer.refresh();
        const chunk = Buffer.from(part.buffer, part.byteOffset, part.byteLength);
        if (this.size !== undefined && this.spooled + chunk.length > this.size) throw new Error('upstream sent more bytes than declared');
        hash.update(chunk);
        await Promise.all([spool.write(chunk, 0, chunk.length, this.spooled), writer.write(chunk)]);
        this.spooled += chunk.length;
        client.observer.fetchedBytes(client.name, chunk.length);
        this.notify();
        timer.refresh();
      }
      clearTimeout(timer);
      if (this.size !== undefined && this.spooled !== this.size) {
        throw new Error(`upstream transfer truncated at ${this.spooled} of ${this.size} bytes`);
      }
      const computed = digestFromHash(this.digest.algorithm, hash);
      if (computed.value !== this.digest.value) throw new Error(`upstream sent content with digest ${computed.value}`);
    } catch (err) {
      clearTimeout(timer);
      await writer.cancel().catch(() => undefined);
      await this.removeTemp(id);
      const reason = this.controller.signal.aborted ? String(this.controller.signal.reason) : (err as Error).message;
      logger.warn(
        { upstream: client.name, repository: this.remoteName, digest: this.digest.value, received: this.spooled, reason },
        'blob fill failed; nothing cached',
      );
      if (err instanceof UpstreamError || this.controller.signal.aborted) client.health.failed(reason);
      this.fail(new Error(`upstream transfer failed: ${reason}`), rejectReady);
      return;
    }
    // Verified: clients may now have the last byte.
    this.size = this.spooled;
    this.verified = true;
    this.notify();
    try {
      await writer.commit();
      if ((await store.blobSize(this.digest)) === this.spooled) {
        await this.removeTemp(id);
      } else {
        await driver.move(tempPath, paths.blobData(this.digest));
        await this.removeTemp(id);
      }
      await store.linkBlob(this.localName, this.digest);
      await this.onLinked();
    } catch (err) {
      logger.error({ err, digest: this.digest.value }, 'verified blob could not be committed to storage');
      await this.removeTemp(id);
    } finally {
      this.finish();
    }
  }

  private async removeTemp(id: string): Promise<void> {
    await this.deps.driver.delete(paths.uploadDir(this.localName, id)).catch((err: unknown) => {
      if (!isNotFound(err)) this.deps.logger.warn({ err }, 'cannot remove a blob fill temp file');
    });
  }

  private fail(err: Error, rejectReady: (err: unknown) => void): void {
    this.failure = err;
    rejectReady(err);
    this.finish();
  }

  /** False once the fill is over and its spool closed: serve the committed blob (or retry) instead. */
  get usable(): boolean {
    return !(this.over && this.verified && this.spool === undefined);
  }

  private finish(): void {
    this.over = true;
    this.onFinished();
    this.notify();
    this.maybeClose();
  }

  private maybeClose(): void {
    if (this.over && this.readers === 0 && this.spool) {
      const spool = this.spool;
      this.spool = undefined;
      spool.close().catch(() => undefined);
    }
  }

  /**
   * A stream of bytes `[start, end)` (end: the whole blob when omitted) read from the spool as they arrive. It ends
   * only after the digest is verified; it is destroyed with an error when the fill fails.
   */
  reader(start = 0, end?: number): Readable {
    this.readers++;
    let pos = start;
    let wanted = false;
    let running = false;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.readers--;
      this.maybeClose();
    };
    const stream: Readable = new Readable({
      highWaterMark: READ_CHUNK,
      read: () => {
        wanted = true;
        if (running) return;
        running = true;
        this.pump(
          stream,
          end,
          () => pos,
          (n) => (pos += n),
          () => wanted,
          () => (wanted = false),
          () => (running = false),
        ).catch((err: unknown) => stream.destroy(err instanceof Error ? err : new Error(String(err))));
      },
      destroy: (err, callback) => {
        release();
        callback(err);
      },
    });
    stream.once('end', release);
    return stream;
  }

  /**
   * Pushes available bytes while the consumer wants more, waiting for the fill when the reader caught up with it.
   * `done` runs synchronously when the loop stops, so a later `read()` always starts a new loop.
   */
  private async pump(
    stream: Readable,
    end: number | undefined,
    pos: () => number,
    advance: (n: number) => void,
    wanted: () => boolean,
    satisfied: () => void,
    done: () => void,
  ): Promise<void> {
    try {
      while (wanted()) {
        if (stream.destroyed) return;
        if (this.failure) throw this.failure;
        const target = end ?? (this.verified ? this.spooled : Infinity);
        if (pos() >= target) {
          stream.push(null);
          return;
        }
        // Withhold the final byte until the digest is verified.
        const visible = this.verified ? this.spooled : Math.max(0, this.spooled - 1);
        const upTo = Math.min(visible, target);
        if (pos() < upTo) {
          if (!this.spool) throw new Error('blob fill closed');
          const n = Math.min(READ_CHUNK, upTo - pos());
          const buf = Buffer.allocUnsafe(n);
          const { bytesRead } = await this.spool.read(buf, 0, n, pos());
          if (bytesRead === 0) throw new Error('spool read returned no data');
          advance(bytesRead);
          if (stream.destroyed) return;
          if (!stream.push(bytesRead === n ? buf : buf.subarray(0, bytesRead))) satisfied();
          continue;
        }
        if (this.over) throw new Error(end !== undefined && end > this.spooled ? 'range beyond the blob' : 'blob fill closed');
        await this.waitForProgress();
      }
    } finally {
      done();
    }
  }
}

/** The client-facing error for an upstream failure before any byte arrived. */
export function toClientError(err: unknown, digest?: Digest): RegistryError | Error {
  if (err instanceof UpstreamError) {
    if (err.status === 429) {
      return registryError(
        'TOOMANYREQUESTS',
        { upstream: err.upstream },
        {
          message: `upstream ${err.upstream} is rate limiting`,
          ...(err.retryAfter ? { headers: { 'Retry-After': err.retryAfter } } : {}),
        },
      );
    }
    return registryError(
      'UNAVAILABLE',
      { upstream: err.upstream, ...(digest ? { digest: digest.value } : {}) },
      {
        message: `${err.message}, and the content is not cached`,
        headers: { 'Retry-After': '10' },
      },
    );
  }
  return err instanceof Error ? err : new Error(String(err));
}
