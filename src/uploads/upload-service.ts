import { spentBuffers } from '../storage/spent-buffers.js';
import { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { RegistryError, registryError } from '../errors/registry-error.js';
import { digestFromHash, newHash, type Digest } from '../oci/digest.js';
import { isNotFound, type StorageDriver, type WriterState } from '../storage/driver.js';
import type { RegistryStore } from '../storage/registry-store.js';
import { UploadDataStore } from '../storage/upload-data-store.js';
import { HashThreads, type RunningHash } from './hash-threads.js';
import type { UploadSession, UploadSessionStore } from './session-store.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** How long one request may hold an upload's write lease before another instance may take over. */
const LEASE_MS = 15 * 60_000;
/** At most this many running sha256 states are kept in memory (they are small; this bounds abandoned ones). */
const MAX_HASHERS = 10_000;
/**
 * Bytes of a request body received ahead of its writer before the body is paused. A paused body stops the socket's
 * reads; the client's data then waits in its own send buffer, and the window update berth sends when it reads again
 * makes the client transmit in berth's thread (on loopback the whole send path runs there). With 1 MiB a push paused
 * ~230 times per 256 MiB; with 4 MiB (and the hash and the disk given room to run ahead) ~20.
 */
const RECEIVE_AHEAD = 4 * 1024 * 1024;

/** The hashing threads of the process's upload services (the first started by `berth serve`, the others on first use). */
let processHashThreads: HashThreads | undefined;
/** Hashing on the calling thread. */
const ON_THIS_THREAD = new HashThreads({ threads: 0 });

/** A chunk's declared position: from `Content-Range` (`start-end`, inclusive) and/or `Content-Length`. */
export interface ChunkRange {
  start?: number;
  end?: number;
  length?: number;
}

/** Formats the `Range` header of an upload: `0-<last byte>` (spec: "0-0" for an empty upload). */
export function uploadRangeHeader(offset: number): string {
  return `0-${Math.max(offset - 1, 0)}`;
}

/**
 * Blob uploads: sessions in an {@link UploadSessionStore}, bytes in storage's {@link UploadDataStore} (which alone
 * knows where they live).
 *
 * The digest of the common path (POST, one PATCH or a PUT with the whole body) is computed while the bytes stream
 * in, with no second read, on a hashing thread ({@link HashThreads}): the running sha256 stays in this process keyed
 * by upload id and offset. When a request lands on another instance (or after a restart, or a hashing thread failed)
 * the state is missing and the data is hashed once from storage at completion instead.
 */
export class UploadService {
  private readonly hashers = new Map<string, { offset: number; hash: RunningHash }>();
  private readonly data: UploadDataStore;
  private readonly hashes: HashThreads;

  constructor(
    driver: StorageDriver,
    private readonly sessions: UploadSessionStore,
    store: RegistryStore,
    /** Where running hashes are computed; default: the process's hashing threads, or this thread for S3. */
    hashes?: HashThreads,
    /** Hears of what the service recovered from (a hashing thread that failed under an upload). */
    private readonly warn: (err: unknown, msg: string) => void = () => undefined,
  ) {
    this.data = new UploadDataStore(driver, store, warn);
    // S3 takes bytes far slower than this thread hashes them (tens to a few hundred MB/s against ~1.7 GB/s), so a
    // hashing thread gains it nothing and would cost its ~10 MiB: the S3 driver's memory bound (peak RSS <= 150 MiB
    // while pushing 1 GiB) measured 150.5-156.7 MiB with one, 133.9 without.
    this.hashes = hashes ?? (driver.name === 's3' ? ON_THIS_THREAD : (processHashThreads ??= new HashThreads()));
  }

  /** Starts the hashing thread before the first upload needs it (a server calls this once it listens). */
  warmHashing(): void {
    this.hashes.warm();
  }

  /** Starts an upload session for `repo`. */
  async start(repo: string): Promise<UploadSession> {
    const startedAt = Date.now();
    // registry:2 writes `startedat` (RFC 3339); its purger and ours both read it.
    const id = await this.data.start(repo, new Date(startedAt));
    const session: UploadSession = { id, repository: repo, offset: 0, startedAt };
    await this.sessions.create(session);
    return session;
  }

  /** The session, or BLOB_UPLOAD_UNKNOWN when it does not exist in this repository. */
  async get(repo: string, id: string): Promise<UploadSession> {
    const session = UUID.test(id) ? await this.sessions.get(id) : null;
    if (!session || session.repository !== repo) throw registryError('BLOB_UPLOAD_UNKNOWN', { uuid: id.slice(0, 64) });
    return session;
  }

  private async lease(repo: string, id: string, expectedOffset: number | undefined): Promise<{ session: UploadSession; token: string }> {
    await this.get(repo, id);
    const result = await this.sessions.acquire(id, expectedOffset, LEASE_MS);
    if (result.ok) return { session: result.session, token: result.token };
    if (result.reason === 'unknown') throw registryError('BLOB_UPLOAD_UNKNOWN', { uuid: id });
    if (result.reason === 'busy') throw registryError('BLOB_UPLOAD_BUSY', { uuid: id });
    // Spec: "If a chunk is uploaded out of order, the registry MUST respond with a 416 Requested Range Not
    // Satisfiable code." The Range header tells the client where to continue.
    throw registryError(
      'RANGE_INVALID',
      { uuid: id, offset: result.session.offset },
      {
        headers: { Range: uploadRangeHeader(result.session.offset), 'Docker-Upload-UUID': id, Location: '' },
      },
    );
  }

  /**
   * Appends a request body. With a `Content-Range` start, the chunk must begin at the session's offset.
   * A body shorter or longer than its declared range changes nothing (SIZE_INVALID); a client that disconnects
   * keeps what was received, so it can ask for the upload's status and resume from there.
   */
  async append(repo: string, id: string, body: Readable, range: ChunkRange = {}): Promise<UploadSession> {
    const { session, token } = await this.lease(repo, id, range.start);
    let releaseUpdate: { offset: number; writerState?: WriterState } = withState(session.offset, session.writerState);
    try {
      releaseUpdate = await this.receive(session, body, range);
    } catch (err) {
      // The data file vanished under a live session (purged by age): the upload is gone, say so.
      if (isNotFound(err)) throw await this.vanished(session);
      throw err;
    } finally {
      const released = await this.sessions.release(id, token, releaseUpdate);
      if (!released) {
        this.dropHasher(id);
        // Cancelled (DELETE) while this request wrote: the upload is gone, not busy.
        // A lost lease outranks whatever the write itself threw: the client must learn the upload is gone or busy.
        // eslint-disable-next-line no-unsafe-finally
        if ((await this.sessions.get(id)) === null) throw registryError('BLOB_UPLOAD_UNKNOWN', { uuid: id });
        // eslint-disable-next-line no-unsafe-finally
        throw registryError('BLOB_UPLOAD_BUSY', { uuid: id, reason: 'write lease expired' });
      }
    }
    return { ...session, ...releaseUpdate };
  }

  private async receive(session: UploadSession, body: Readable, range: ChunkRange): Promise<{ offset: number; writerState?: WriterState }> {
    const unchanged = withState(session.offset, session.writerState);
    const expected = range.start !== undefined && range.end !== undefined ? range.end - range.start + 1 : range.length;
    if (range.start !== undefined && range.end !== undefined && range.length !== undefined && range.length !== expected) {
      body.resume();
      throw registryError(
        'RANGE_INVALID',
        { reason: 'Content-Range and Content-Length disagree' },
        {
          headers: { Range: uploadRangeHeader(session.offset) },
        },
      );
    }
    const hasher = this.takeHasher(session);
    let writer: Awaited<ReturnType<UploadDataStore['writer']>>;
    try {
      writer = await this.data.writer(session.repository, session.id, session.writerState);
    } catch (err) {
      hasher?.dispose();
      throw err;
    }
    let received = 0;
    let hashed = 0;
    let failed: unknown;
    let storageFailed: unknown;
    let tooLong = false;
    try {
      // Chunks are hashed as they arrive and handed to the writer in order without waiting for each write: the writer
      // batches them and writes one batch while the next arrives. The body pauses only while more than
      // RECEIVE_AHEAD bytes wait for the writer (back-pressure, bounded memory).
      let queued = 0;
      let paused = false;
      // A chunk of a request body from Node's HTTP parser is a fresh copy in memory of its own that nothing else holds;
      // once a writer that copies has taken it, nothing needs it but the hash, which takes it to its thread.
      const handOver = hasher?.takesChunks === true && writer.copiesChunks === true && body instanceof IncomingMessage;
      let writes: Promise<void> = Promise.resolve();
      const onData = (chunk: Buffer): void => {
        // Read once: a chunk handed to the hashing thread is empty afterwards.
        const length = chunk.length;
        received += length;
        // A chunk handed to the hashing thread leaves this thread's memory with it: only the others are garbage here.
        if (!handOver) spentBuffers(length);
        if (expected !== undefined && received > expected) tooLong = true;
        // After a storage failure, or past the declared length, the rest of the body is read and dropped: the client
        // then reads the error answer (503 when the backend is down, else SIZE_INVALID) instead of a connection reset
        // in the middle of its upload.
        if (storageFailed !== undefined || tooLong) return;
        hashed += length;
        queued += length;
        writes = writes.then(async () => {
          // The hash waits only while its thread holds as many batches as it may (see HashThreads).
          if (!handOver) {
            const hashing = hasher?.update(chunk);
            if (hashing) await hashing;
          }
          try {
            if (storageFailed === undefined) await writer.write(chunk);
          } catch (err) {
            storageFailed = err;
          }
          if (handOver) {
            // The writer has copied the chunk: its memory goes to the hashing thread as it is (no copy).
            const hashing = hasher?.update(chunk, storageFailed === undefined);
            if (hashing) await hashing;
          }
          queued -= length;
          if (paused && queued <= RECEIVE_AHEAD / 2) {
            paused = false;
            body.resume();
          }
        });
        if (queued > RECEIVE_AHEAD && !paused) {
          paused = true;
          body.pause();
        }
      };
      body.on('data', onData);
      try {
        await finished(body);
      } finally {
        body.off('data', onData);
        await writes;
      }
      if (tooLong) throw registryError('SIZE_INVALID', { reason: 'body longer than its declared length' });
      if (storageFailed === undefined && expected !== undefined && received !== expected) {
        throw registryError('SIZE_INVALID', { reason: 'body shorter than its declared length', declared: expected, received });
      }
    } catch (err) {
      failed = err;
    }
    if (storageFailed !== undefined) {
      // The request fails and the session stays where it was (a writer resumed from it ignores whatever this one
      // left beyond it); closing only releases the writer's resources.
      hasher?.dispose();
      await writer.close().catch(() => undefined);
      // eslint-disable-next-line @typescript-eslint/only-throw-error -- rethrown as the driver threw it
      throw storageFailed;
    }
    let state: WriterState;
    try {
      state = await writer.close();
    } catch (err) {
      hasher?.dispose();
      throw failed ?? err;
    }
    if (failed !== undefined) {
      // A declared length that was not met: keep nothing of this request.
      if (isSizeError(failed)) {
        hasher?.dispose();
        // eslint-disable-next-line @typescript-eslint/only-throw-error -- rethrown as the body stream threw it
        throw failed;
      }
      // The client went away: keep what arrived, so it can resume from the new offset.
      this.keepHasher(session.id, state.size, state.size === session.offset + hashed, hasher);
      return state.size > session.offset ? { offset: state.size, writerState: state } : unchanged;
    }
    this.keepHasher(session.id, state.size, state.size === session.offset + hashed, hasher);
    return { offset: state.size, writerState: state };
  }

  /** The running hash to continue from the session's offset (removed from the map while the request runs). */
  private takeHasher(session: UploadSession): RunningHash | undefined {
    const h = this.hashers.get(session.id);
    this.hashers.delete(session.id);
    if (h && h.offset === session.offset) return h.hash;
    h?.hash.dispose();
    return session.offset === 0 ? this.hashes.create() : undefined;
  }

  /** Keeps `hash` as the upload's running hash at `offset` when it saw every byte up to there (`whole`), else drops it. */
  private keepHasher(id: string, offset: number, whole: boolean, hash: RunningHash | undefined): void {
    this.dropHasher(id);
    if (!hash) return;
    if (!whole) {
      hash.dispose();
      return;
    }
    hash.pause();
    if (this.hashers.size >= MAX_HASHERS) {
      const oldest = this.hashers.keys().next().value;
      if (oldest !== undefined) this.dropHasher(oldest);
    }
    this.hashers.set(id, { offset, hash });
  }

  private dropHasher(id: string): void {
    this.hashers.get(id)?.hash.dispose();
    this.hashers.delete(id);
  }

  /** The running sha256 of an upload when this process saw every byte of it, else undefined. */
  private runningHash(session: UploadSession, algorithm: Digest['algorithm']): RunningHash | undefined {
    const h = this.hashers.get(session.id);
    return algorithm === 'sha256' && h && h.offset === session.offset ? h.hash : undefined;
  }

  /** Digest of the upload's bytes: from the running hash when this process saw them all, else by reading them. */
  private async digestOf(session: UploadSession, algorithm: Digest['algorithm']): Promise<Digest> {
    const running = this.runningHash(session, algorithm);
    if (running) {
      this.hashers.delete(session.id);
      try {
        const hex = await running.digest();
        return { algorithm: 'sha256', hex, value: `sha256:${hex}` };
      } catch (err) {
        // The hashing thread failed: read the bytes back instead, as for an upload another instance received.
        this.warn(err, `upload ${session.id}: its hashing thread failed; hashing its ${session.offset} bytes from storage`);
      }
    }
    const hash = newHash(algorithm);
    if (session.offset > 0) {
      const stream = await this.data.reader(session.repository, session.id, 0, session.offset);
      for await (const chunk of stream as AsyncIterable<Buffer>) hash.update(chunk);
    }
    return digestFromHash(algorithm, hash);
  }

  /**
   * Completes an upload: appends the final body (if any), verifies the digest and makes the blob visible.
   *
   * Spec: "If the digest does not match the uploaded content, the registry MUST respond with DIGEST_INVALID";
   * the upload is then discarded, and nothing becomes visible.
   */
  async complete(repo: string, id: string, digest: Digest, body: Readable | null, range: ChunkRange = {}): Promise<void> {
    if (body) await this.append(repo, id, body, range);
    const { session, token } = await this.lease(repo, id, undefined);
    let state = session.writerState;
    let discarded = false;
    try {
      if (state && !this.runningHash(session, digest.algorithm)) {
        // The bytes have to be hashed from storage (another instance received some of them). Drivers that assemble
        // the data only at commit (S3 multipart uploads) make it readable then, so commit it where it is; the blob's
        // own key is still untouched until the digest matches.
        state = await this.data.commitInPlace(repo, id, state);
      }
      const computed = await this.digestOf(session, digest.algorithm);
      if (computed.value !== digest.value) {
        discarded = true;
        await this.discard({ ...session, ...withState(session.offset, state) });
        throw registryError('DIGEST_INVALID', { expected: digest.value, computed: computed.value });
      }
      state = await this.data.commitUpload(repo, id, digest, state ? { size: session.offset, state } : { size: session.offset });
      discarded = true;
      await this.forgetCompleted({ ...session, ...withState(session.offset, state) });
    } catch (err) {
      // A backend failure must not leave the upload leased (the client retries the PUT once storage is back), and
      // the session records whether the data was already committed at the upload path.
      if (!discarded && isNotFound(err)) throw await this.vanished(session);
      if (!discarded) await this.sessions.release(id, token, withState(session.offset, state)).catch(() => false);
      throw err;
    }
  }

  /** Uploads a whole blob in one request (POST `?digest=`). */
  async monolithic(repo: string, digest: Digest, body: Readable, range: ChunkRange = {}): Promise<void> {
    const session = await this.start(repo);
    try {
      await this.complete(repo, session.id, digest, body, range);
    } catch (err) {
      await this.discard(session).catch(() => undefined);
      throw err;
    }
  }

  /** Cancels an upload and removes its data. */
  async cancel(repo: string, id: string): Promise<void> {
    const session = await this.get(repo, id);
    await this.discard(session);
  }

  /** Forgets an upload whose data is gone; returns the error to answer (BLOB_UPLOAD_UNKNOWN). */
  private async vanished(session: UploadSession): Promise<RegistryError> {
    this.dropHasher(session.id);
    await this.data.remove(session.repository, session.id).catch(() => undefined);
    await this.sessions.delete(session.id).catch(() => undefined);
    return registryError('BLOB_UPLOAD_UNKNOWN', { uuid: session.id, reason: 'upload data not found' });
  }

  /**
   * Forgets a completed upload: its files and its session before the answer; its folder is kept for another upload
   * or removed after the answer (see {@link UploadDataStore.finish}).
   */
  private async forgetCompleted(session: UploadSession): Promise<void> {
    this.dropHasher(session.id);
    await this.data.finish(session.repository, session.id, session.writerState);
    await this.sessions.delete(session.id);
  }

  /** Resolves once the upload folders being removed after their answers are gone: a server waits before closing storage. */
  settle(): Promise<void> {
    return this.data.settle();
  }

  private async discard(session: UploadSession): Promise<void> {
    this.dropHasher(session.id);
    await this.data.remove(session.repository, session.id, session.writerState);
    await this.sessions.delete(session.id);
  }
}

function withState(offset: number, writerState: WriterState | undefined): { offset: number; writerState?: WriterState } {
  return writerState ? { offset, writerState } : { offset };
}

function isSizeError(err: unknown): boolean {
  return err instanceof RegistryError && err.descriptor.code === 'SIZE_INVALID';
}
