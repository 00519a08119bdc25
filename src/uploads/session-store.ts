import type { WriterState } from '../storage/driver.js';

/**
 * An upload in progress. Everything another berth instance needs to continue it lives here, so any instance can
 * take any request of an upload when the sessions are in Redis.
 */
export interface UploadSession {
  /** UUID, also the `_uploads/<id>` directory name. */
  id: string;
  repository: string;
  /** Bytes accepted so far; the next chunk must start here. */
  offset: number;
  /** Milliseconds since the epoch. */
  startedAt: number;
  /** Driver state that resumes the data writer (see `StorageDriver.writer`). Absent before the first byte. */
  writerState?: WriterState;
}

export type AcquireResult =
  | { ok: true; session: UploadSession; token: string }
  | { ok: false; reason: 'unknown' }
  /** The session's offset is not the one the request expected (out-of-order or repeated chunk). */
  | { ok: false; reason: 'offset'; session: UploadSession }
  /** Another request holds the write lease. */
  | { ok: false; reason: 'busy'; session: UploadSession };

/**
 * Where upload sessions live: in process (single node) or in Redis (any instance continues any upload).
 *
 * Contract (checked by `test/suites/session-store-suite.ts` against every implementation):
 * - A session expires `ttlMs` after it was last created or released; `get` then returns null.
 * - `acquire` is atomic: of two concurrent acquires on one session at most one gets `ok: true`. It fails with
 *   `offset` when `expectedOffset` is given and differs from the session's offset, and with `busy` while another
 *   unexpired lease is held. A lease expires after `leaseMs` (a crashed instance does not block an upload forever).
 * - `release` stores the update and frees the lease only while `token` still holds it; it returns false otherwise
 *   (the lease expired and someone else took it), and then changes nothing.
 * - `delete` is idempotent.
 */
export interface UploadSessionStore {
  readonly name: string;
  create(session: UploadSession): Promise<void>;
  get(id: string): Promise<UploadSession | null>;
  acquire(id: string, expectedOffset: number | undefined, leaseMs: number): Promise<AcquireResult>;
  release(id: string, token: string, update: { offset: number; writerState?: WriterState }): Promise<boolean>;
  delete(id: string): Promise<void>;
  /** Resolves when the backing service is reachable. */
  health(): Promise<void>;
  close(): Promise<void>;
}

export interface SessionStoreOptions {
  /** How long an untouched session lives. */
  ttlMs: number;
}
