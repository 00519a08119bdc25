import { spentBuffers } from '../storage/spent-buffers.js';
import { randomUUID, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { registryError, RegistryError } from '../errors/registry-error.js';
import { digestFromHash, newHash, type Digest } from '../oci/digest.js';
import { InvalidOffsetError, isNotFound, type FileWriter, type StorageDriver } from '../storage/driver.js';
import { paths } from '../storage/paths.js';
import type { RegistryStore } from '../storage/registry-store.js';
import type { FillCoordinator, FillHolder, FillLease } from './fill-coordinator.js';
import { UpstreamError, type UpstreamAnswer, type UpstreamClient } from './upstream.js';

/** What a client learns once the upstream has answered: the blob's size when the upstream declared it. */
export interface FillInfo {
  size: number | undefined;
}

/** What a {@link BlobFill} works with. */
export interface BlobFillDeps {
  client: UpstreamClient;
  driver: StorageDriver;
  store: RegistryStore;
  logger: Logger;
  /** Decides which process fetches from the upstream (Redis: one across replicas; local: this one). */
  coordinator: FillCoordinator;
  /** How often a fill in another process is looked at while following it (default 100 ms). */
  pollMs?: number;
}

/** Upstream bytes written between two announcements to the followers in this process. */
const FILL_CHUNK = 1024 * 1024;

/** How often a fill may change hands (its filler died or gave up) before the clients get an error. */
const MAX_HANDOVERS = 3;

/** How long a follower keeps trying when the coordinator cannot be read before it fetches on its own. */
const COORDINATOR_PATIENCE_MS = 10_000;

const NO_LEASE: FillLease = { publish: async () => undefined, release: async () => undefined };

/**
 * Whether a driver's upload file can be read while it is being written. The filesystem's can (a writer's flushed
 * bytes are in the file at once). An S3 multipart upload cannot be read before it is completed, so on S3 clients
 * of a fill in progress wait until the blob is committed and then stream it from storage (their response headers go
 * out at once; the body starts after the commit). Not a whole-blob copy anywhere either way.
 */
function readsWhileWriting(driver: StorageDriver): boolean {
  return driver.name === 'filesystem';
}

/**
 * One fill of an uncached blob, shared by every client of this process asking for it (single-flight), and across
 * processes through the {@link FillCoordinator}.
 *
 * The blob is written once, into storage: the process holding the lease (the filler) streams the upstream body into
 * the storage driver's writer at `repositories/<name>/_uploads/<id>/data` (so the upload purger removes leftovers of
 * a crash), hashing it, and publishes that path with the lease. Clients do not get their bytes from the upstream
 * body or from any copy elsewhere: they read the upload file through the driver, at their own pace, from byte 0 or
 * their range start, waiting for it to grow, so a slow or vanished client never slows or aborts the fill for the
 * others and memory stays at one read buffer per client.
 *
 * Every other process that needs the blob while the lease is held follows the filler instead of fetching: it reads
 * the same upload file from shared storage as it grows, hashes it itself, and its clients read up to what it hashed.
 * If the filler dies (its lease expires without a commit), one follower takes the lease and fetches from byte 0
 * into a new upload file; what clients were already sent is checked against the new content (a hash of the prefix),
 * so every client still gets exactly the blob's bytes or an error.
 *
 * The last byte is withheld from every client until the digest is verified (by the filler, or by the follower over
 * the bytes it read); a failed, truncated or corrupt transfer ends every client's response with an error (so no
 * client mistakes it for a complete blob) and commits nothing. On success the upload file is moved to
 * `blobs/.../data` and linked into the repository; clients still reading continue from there.
 */
export class BlobFill {
  /** Resolves once the blob's size is known (the upstream answered 200); rejects with the error for the client. */
  readonly ready: Promise<FillInfo>;
  /** Resolves when the fill is over (committed or failed); never rejects. */
  readonly finished: Promise<void>;
  private size: number | undefined;
  /** The storage path clients read now (the upload file, then the committed blob); undefined: nothing to read yet. */
  private source: string | undefined;
  /** Bytes of {@link source} clients may read (the last byte of the blob only once verified). */
  private available = 0;
  private verified = false;
  private committed = false;
  private failure: Error | undefined;
  private over = false;
  /** Bumped on every change clients may wait for. */
  private progress = 0;
  private waiters: Array<() => void> = [];
  private readonly controller = new AbortController();
  private hash: Hash;
  /** Bytes of {@link source} hashed so far. */
  private hashed = 0;
  /**
   * Digests of the prefixes clients may have been sent from earlier sources (a fill that changed hands): the
   * current source must start with the same bytes, checked as its hash passes each length.
   */
  private prefixes: Array<{ length: number; hex: string }> = [];
  private readonly readable: boolean;
  private readonly leaseKey: string;

  constructor(
    private readonly deps: BlobFillDeps,
    private readonly remoteName: string,
    private readonly localName: string,
    private readonly digest: Digest,
    private readonly onLinked: () => Promise<void>,
    private readonly onFinished: () => void,
  ) {
    this.hash = newHash(digest.algorithm);
    this.readable = readsWhileWriting(deps.driver);
    // Per repository, as the single-flight within a process: a blob is linked into a repository only after its
    // upstream served it for that repository.
    this.leaseKey = `${deps.client.name}/${remoteName}@${digest.value}`;
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

  /** Stops the download or the following (server shutdown). */
  abort(): void {
    this.controller.abort(new Error('shutting down'));
  }

  /** False once the fill is over and committed: serve the stored blob instead. */
  get usable(): boolean {
    return !(this.over && this.committed);
  }

  private notify(): void {
    this.progress++;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves at the next change after `since` (at once when there was one already). */
  private waitForProgress(since: number): Promise<void> {
    if (this.progress !== since || this.over) return Promise.resolve();
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  // ---- who fills ---------------------------------------------------------------------------------------------

  private async run(resolveReady: (info: FillInfo) => void, rejectReady: (err: unknown) => void): Promise<void> {
    const ready = (size: number | undefined) => resolveReady({ size });
    let previous: string | undefined;
    try {
      for (let round = 0; ; round++) {
        this.controller.signal.throwIfAborted();
        if (round > MAX_HANDOVERS) throw new Error('the fill changed hands too often');
        const id = randomUUID();
        const path = paths.uploadData(this.localName, id);
        let claim: { lease: FillLease } | { holder: FillHolder };
        try {
          claim = await this.deps.coordinator.acquire(this.leaseKey, path);
        } catch (err) {
          this.deps.logger.warn({ err, digest: this.digest.value }, 'fill coordination unavailable: fetching without a lease');
          claim = { lease: NO_LEASE };
        }
        if ('lease' in claim) {
          // The previous filler went away without finishing: its upload file is of no use to anyone.
          if (previous !== undefined) await this.removeUploadFile(previous);
          await this.lead(claim.lease, id, path, ready, previous !== undefined);
          this.finish();
          return;
        }
        const vacated = await this.follow(claim.holder, ready);
        if (vacated === null) {
          this.finish();
          return;
        }
        previous = vacated;
        this.deps.logger.info({ digest: this.digest.value, upstream: this.deps.client.name }, 'blob filler went away; taking the fill over');
      }
    } catch (err) {
      this.fail(err, rejectReady);
    }
  }

  /** Fetches the blob from the upstream into a new upload file at `path` and commits it. */
  private async lead(lease: FillLease, id: string, path: string, ready: (size: number | undefined) => void, followed: boolean): Promise<void> {
    const { client, driver, logger } = this.deps;
    let downloading = false;
    try {
      // Committed by the filler this one followed, just before it let go?
      if (followed && (await this.settleIfCommitted(ready))) return;
      // Fills in progress count downloads from the upstream in this process (not the fills it follows).
      client.observer.fills(client.name, 1);
      downloading = true;
      let res: UpstreamAnswer;
      try {
        res = await client.request({
          method: 'GET',
          repository: this.remoteName,
          path: `blobs/${this.digest.value}`,
          signal: this.controller.signal,
          blob: true,
        });
      } catch (err) {
        throw toClientError(err, this.digest);
      }
      if (res.status !== 200) {
        await res.body?.cancel().catch(() => undefined);
        throw registryError(
          'BLOB_UNKNOWN',
          { digest: this.digest.value },
          { message: `blob unknown to upstream ${client.name} (status ${res.status})` },
        );
      }
      const header = res.headers.get('content-length');
      const declared = header !== null && /^\d+$/.test(header) ? Number(header) : undefined;
      if (declared !== undefined && this.size !== undefined && declared !== this.size) {
        await res.body?.cancel().catch(() => undefined);
        throw new Error(`upstream declares ${declared} bytes where the fill taken over declared ${this.size}`);
      }
      if (declared !== undefined) this.size = declared;
      await lease.publish(this.size ?? null).catch((err: unknown) => logger.warn({ err }, 'cannot publish a blob fill'));
      let writer: FileWriter | undefined;
      try {
        await driver.putContent(paths.uploadStartedAt(this.localName, id), Buffer.from(new Date().toISOString()));
        writer = await driver.writer(path);
      } catch (err) {
        await res.body?.cancel().catch(() => undefined);
        await writer?.cancel().catch(() => undefined);
        await this.removeTemp(id);
        throw registryError('UNAVAILABLE', undefined, { message: 'cannot store the blob', cause: err });
      }
      this.switchSource(this.readable ? path : undefined);
      ready(this.size);
      const received = await this.download(res, writer, id);
      await this.commit(writer, id, path, received);
    } finally {
      if (downloading) client.observer.fills(client.name, -1);
      await lease.release().catch((err: unknown) => logger.warn({ err }, 'cannot release a blob fill lease'));
    }
  }

  /** Streams the upstream body into `writer`, hashing it; returns the byte count once the digest is verified. */
  private async download(res: UpstreamAnswer, writer: FileWriter, id: string): Promise<number> {
    const { client, logger } = this.deps;
    const idle = client.settings.timeoutMs;
    const timer = setTimeout(() => this.controller.abort(new Error(`no data from upstream for ${idle} ms`)), idle);
    let received = 0;
    let unannounced = 0;
    /** Followers in this process learn how far the file is written (once per FILL_CHUNK: few wake-ups). */
    const announce = (): void => {
      unannounced = 0;
      if (!this.readable) return;
      this.available = this.hashed;
      this.notify();
    };
    try {
      if (!res.body) throw new Error('upstream sent no body');
      for await (const part of res.body) {
        timer.refresh();
        // Each chunk is hashed and handed to the writer as it comes (the writer batches or copies it as it needs):
        // no copy of a gathered batch, which was 256 MiB more of short-lived buffers per 256 MiB filled.
        const chunk = Buffer.from(part.buffer, part.byteOffset, part.byteLength);
        received += chunk.length;
        spentBuffers(chunk.length);
        if (this.size !== undefined && received > this.size) throw new Error('upstream sent more bytes than declared');
        client.observer.fetchedBytes(client.name, chunk.length);
        this.absorb(chunk);
        await writer.write(chunk);
        unannounced += chunk.length;
        if (unannounced >= FILL_CHUNK) announce();
        timer.refresh();
      }
      announce();
      clearTimeout(timer);
      if (this.size !== undefined && received !== this.size) throw new Error(`upstream transfer truncated at ${received} of ${this.size} bytes`);
      this.verifyHash();
      return received;
    } catch (err) {
      clearTimeout(timer);
      await writer.cancel().catch(() => undefined);
      await this.removeTemp(id);
      const reason = this.controller.signal.aborted ? String(this.controller.signal.reason) : (err as Error).message;
      logger.warn(
        { upstream: client.name, repository: this.remoteName, digest: this.digest.value, received, reason },
        'blob fill failed; nothing cached',
      );
      if (err instanceof UpstreamError || this.controller.signal.aborted) client.health.failed(reason);
      throw new Error(`upstream transfer failed: ${reason}`, { cause: err });
    }
  }

  /** Commits the verified upload file and moves it to the blob's place. */
  private async commit(writer: FileWriter, id: string, path: string, size: number): Promise<void> {
    const { driver, store, logger } = this.deps;
    try {
      await writer.commit();
      this.size = size;
      if (this.readable) {
        // Verified and all in the upload file: clients may have the last byte.
        this.verified = true;
        this.available = size;
        this.notify();
      }
      if ((await store.blobSize(this.digest)) !== size) await driver.move(path, paths.blobData(this.digest));
      await this.removeTemp(id);
    } catch (err) {
      logger.error({ err, digest: this.digest.value }, 'verified blob could not be committed to storage');
      await this.removeTemp(id);
      throw err;
    }
    await this.becomeCommitted(size);
  }

  /**
   * Follows a fill another process holds: reads its upload file from shared storage as it grows (hashing it; clients
   * read what was hashed) until the blob is committed (returns null) or the holder went away without committing
   * (returns the path it was writing).
   */
  private async follow(first: FillHolder, ready: (size: number | undefined) => void): Promise<string | null> {
    const { coordinator, driver, logger } = this.deps;
    const pollMs = this.deps.pollMs ?? 100;
    let current = first;
    let since = Date.now();
    const following = (h: FillHolder) => this.readable && h.size !== undefined && h.size !== null;
    if (following(first)) this.switchSource(first.path);
    for (;;) {
      this.controller.signal.throwIfAborted();
      if (await this.settleIfCommitted(ready)) return null;
      let holder: FillHolder | null;
      try {
        holder = await coordinator.holder(this.leaseKey);
        since = Date.now();
      } catch (err) {
        if (Date.now() - since > COORDINATOR_PATIENCE_MS) {
          logger.warn({ err, digest: this.digest.value }, 'fill coordination unavailable while following a fill');
          return current.path;
        }
        await delay(pollMs, undefined, { signal: this.controller.signal });
        continue;
      }
      if (holder === null) return (await this.settleIfCommitted(ready)) ? null : current.path;
      if (holder.token !== current.token || (holder.size !== undefined && current.size === undefined)) {
        const changedHands = holder.token !== current.token;
        current = holder;
        if (following(holder) && (changedHands || this.source !== holder.path)) this.switchSource(holder.path);
      }
      if (holder.size !== undefined) {
        const size = holder.size ?? undefined;
        if (size !== undefined && this.size !== undefined && size !== this.size)
          throw new Error(`fillers disagree on the size (${size}, ${this.size})`);
        if (size !== undefined) this.size = size;
        ready(this.size);
      }
      if (following(holder) && this.size !== undefined && !this.verified) {
        let onDisk = 0;
        try {
          onDisk = (await driver.stat(holder.path)).size;
        } catch (err) {
          if (!isNotFound(err)) throw err;
        }
        if (onDisk > this.size) throw new Error('the upload file of the fill grew past the blob size');
        if (onDisk > this.hashed) {
          try {
            await this.absorbFile(holder.path, onDisk);
          } catch (err) {
            // Moved to the blob's place (committed) or removed (failed) meanwhile: the next round sees which.
            if (isNotFound(err) || err instanceof InvalidOffsetError) continue;
            throw err;
          }
          if (this.hashed === this.size) {
            this.verifyHash();
            this.verified = true;
            this.available = this.size;
            this.notify();
          }
          continue;
        }
      }
      await delay(pollMs, undefined, { signal: this.controller.signal });
    }
  }

  /**
   * When the blob is in storage (committed by some filler), serves it from there and returns true. Bytes clients were
   * sent from an upload file before are checked against it first.
   */
  private async settleIfCommitted(ready: (size: number | undefined) => void): Promise<boolean> {
    const stored = await this.deps.store.blobSize(this.digest);
    if (stored === null) return false;
    if (!this.verified && this.available > 0) {
      // Clients were sent bytes [0, available) of an upload file not verified here. The stored blob was verified by
      // whoever committed it, so hashing on over its bytes from where this hash stands checks the bytes already sent:
      // the digest comes out right only if they are the blob's first bytes. Clients still reading continue from the
      // blob meanwhile (right bytes, the last one withheld until this check passed).
      const blob = paths.blobData(this.digest);
      this.size = stored;
      this.source = blob;
      this.notify();
      await this.absorbFile(blob, stored);
      this.verifyHash();
    }
    ready(stored);
    await this.becomeCommitted(stored);
    return true;
  }

  /** Clients read the committed blob from now on; the repository links it. */
  private async becomeCommitted(size: number): Promise<void> {
    this.size = size;
    this.verified = true;
    this.committed = true;
    this.source = paths.blobData(this.digest);
    this.available = size;
    this.notify();
    await this.deps.store.linkBlob(this.localName, this.digest);
    await this.onLinked();
  }

  // ---- hashing -----------------------------------------------------------------------------------------------

  /**
   * Clients read `path` from now on, from byte 0 of its content (its hash starts over). When clients may already
   * have been sent bytes of the previous source, its hash so far becomes a prefix the new source must match.
   */
  private switchSource(path: string | undefined): void {
    if (!this.verified && this.available > 0) this.prefixes.push({ length: this.hashed, hex: this.hash.copy().digest('hex') });
    this.hash = newHash(this.digest.algorithm);
    this.hashed = 0;
    this.available = 0;
    this.source = path;
    this.notify();
  }

  /** Adds bytes of the current source to its hash, checking each recorded prefix as the hash passes its length. */
  private absorb(chunk: Buffer): void {
    let rest = chunk;
    for (;;) {
      const due = this.prefixes.find((p) => p.length > this.hashed && p.length <= this.hashed + rest.length);
      if (!due) break;
      const k = due.length - this.hashed;
      this.hash.update(rest.subarray(0, k));
      this.hashed += k;
      rest = rest.subarray(k);
      if (this.hash.copy().digest('hex') !== due.hex)
        throw new Error('the content differs from what clients were sent before the fill changed hands');
      this.prefixes = this.prefixes.filter((p) => p !== due);
    }
    this.hash.update(rest);
    this.hashed += rest.length;
  }

  /** Hashes bytes `[hashed, end)` of `path`; clients may read them as they pass. */
  private async absorbFile(path: string, end: number): Promise<void> {
    const stream = await this.deps.driver.reader(path, this.hashed, end - this.hashed, { signal: this.controller.signal });
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      this.absorb(chunk);
      this.available = Math.min(this.hashed, end);
      this.notify();
    }
    if (this.hashed !== end) throw new Error(`read ${this.hashed} of ${end} bytes of a blob fill`);
  }

  /** Throws unless every byte hashed is the blob's content. */
  private verifyHash(): void {
    if (this.prefixes.length > 0) throw new Error('the content is shorter than what clients were sent before the fill changed hands');
    const computed = digestFromHash(this.digest.algorithm, this.hash);
    if (computed.value !== this.digest.value) throw new Error(`upstream sent content with digest ${computed.value}`);
  }

  // ---- ending ------------------------------------------------------------------------------------------------

  private async removeTemp(id: string): Promise<void> {
    await this.deps.driver.delete(paths.uploadDir(this.localName, id)).catch((err: unknown) => {
      if (!isNotFound(err)) this.deps.logger.warn({ err }, 'cannot remove a blob fill temp file');
    });
  }

  /** Removes the upload directory of a fill whose filler went away (`.../_uploads/<id>/data` → `.../_uploads/<id>`). */
  private async removeUploadFile(path: string): Promise<void> {
    const m = /^(\/.+\/_uploads\/[A-Za-z0-9-]+)\/data$/.exec(path);
    if (!m) return;
    await this.deps.driver.delete(m[1] as string).catch((err: unknown) => {
      if (!isNotFound(err)) this.deps.logger.warn({ err }, 'cannot remove the upload file of a fill taken over');
    });
  }

  private fail(err: unknown, rejectReady: (err: unknown) => void): void {
    // What every client gets: a registry error (answered as such when no byte was sent yet, else a broken transfer).
    if (err instanceof RegistryError) {
      this.failure = err;
    } else {
      const reason = this.controller.signal.aborted ? `blob fill stopped: ${String(this.controller.signal.reason)}` : (err as Error).message;
      this.deps.logger.warn({ reason, digest: this.digest.value }, 'blob fill failed');
      this.failure = registryError('UNAVAILABLE', { digest: this.digest.value }, { message: reason, headers: { 'Retry-After': '10' } });
    }
    rejectReady(this.failure);
    this.finish();
  }

  private finish(): void {
    this.over = true;
    this.onFinished();
    this.notify();
  }

  // ---- clients -----------------------------------------------------------------------------------------------

  /**
   * A stream of bytes `[start, end)` (end: the whole blob when omitted) read from storage as they become available.
   * It ends only after the digest is verified; it is destroyed with an error when the fill fails.
   */
  reader(start = 0, end?: number): Readable {
    return Readable.from(this.read(start, end), { objectMode: false, highWaterMark: 1024 * 1024 });
  }

  private async *read(start: number, end: number | undefined): AsyncGenerator<Buffer> {
    let pos = start;
    for (;;) {
      if (this.failure) throw this.failure;
      const total = this.verified ? this.size : undefined;
      if (end !== undefined && total !== undefined && end > total) throw new Error('range beyond the blob');
      const target = end ?? total ?? Infinity;
      if (pos >= target) return;
      // Withhold the final byte until the digest is verified.
      const visible = this.verified ? this.available : this.size !== undefined ? Math.min(this.available, this.size - 1) : this.available - 1;
      const upTo = Math.min(visible, target);
      const seen = this.progress;
      const source = this.source;
      if (pos < upTo && source !== undefined) {
        let got = 0;
        let stream: Readable | undefined;
        try {
          stream = await this.deps.driver.reader(source, pos, upTo - pos);
          for await (const chunk of stream as AsyncIterable<Buffer>) {
            pos += chunk.length;
            got += chunk.length;
            yield chunk;
          }
        } catch (err) {
          // The upload file moved to the blob's place (or is not flushed that far yet): look again after a change.
          if (!isNotFound(err) && !(err instanceof InvalidOffsetError)) throw err;
        } finally {
          stream?.destroy();
        }
        if (got > 0) continue;
      }
      if (this.over && this.progress === seen) throw this.failure ?? new Error('blob fill closed');
      await this.waitForProgress(seen);
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
