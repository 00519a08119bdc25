import { randomUUID } from 'node:crypto';
import type { WriterState } from '../storage/driver.js';
import type { AcquireResult, SessionStoreOptions, UploadSession, UploadSessionStore } from './session-store.js';

/** What the store keeps per session: the session as JSON (like Redis keeps it), the lease and the expiry. */
interface Entry {
  /** JSON of the session, so callers never share objects with the store and non-JSON state fails here as in Redis. */
  json: string;
  lease?: { token: string; until: number };
  /** Monotonic milliseconds (`performance.now()`) after which the session is gone. */
  expiresAt: number;
}

/**
 * At most this many sessions are kept by default. Each costs a few hundred bytes here (plus a running hash in the
 * upload service, itself capped), so 10 000 abandoned sessions stay within a few MB, however long their TTL.
 */
export const DEFAULT_MAX_SESSIONS = 10_000;

/** The sweep never runs more often than this, however small the TTL. */
const MIN_SWEEP_MS = 1000;
/** Nor less often than this, however large the TTL. */
const MAX_SWEEP_MS = 60_000;

/** Monotonic clock: leases and TTLs must not jump when the wall clock is adjusted. */
function now(): number {
  return performance.now();
}

function decode(json: string): UploadSession {
  return JSON.parse(json) as UploadSession;
}

function encode(session: UploadSession): string {
  const copy: UploadSession = { id: session.id, repository: session.repository, offset: session.offset, startedAt: session.startedAt };
  if (session.writerState !== undefined) copy.writerState = session.writerState;
  return JSON.stringify(copy);
}

/**
 * Upload sessions in this process (a single berth instance). Expired sessions are invisible from the moment
 * they expire (checked on every access) and removed by a periodic, unref'd sweep that `close()` stops.
 *
 * Bounded: with `maxSessions` sessions kept, creating one more first drops the expired ones, then the one idle
 * longest (not being written to); its client gets BLOB_UPLOAD_UNKNOWN and starts over, as after a restart. Its data
 * is left to the upload purger.
 */
export class MemorySessionStore implements UploadSessionStore {
  readonly name = 'memory';
  private readonly ttlMs: number;
  private readonly sessions = new Map<string, Entry>();
  private readonly maxSessions: number;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(options: SessionStoreOptions & { maxSessions?: number }) {
    if (!(options.ttlMs > 0)) throw new RangeError('ttlMs must be a positive number of milliseconds');
    this.ttlMs = options.ttlMs;
    this.maxSessions = options.maxSessions ?? DEFAULT_MAX_SESSIONS;
    if (!(this.maxSessions >= 1)) throw new RangeError('maxSessions must be at least 1');
    const every = Math.min(Math.max(options.ttlMs, MIN_SWEEP_MS), MAX_SWEEP_MS);
    this.sweeper = setInterval(() => this.sweep(), every);
    this.sweeper.unref();
  }

  /** The live entry of `id`, dropping it first when it has expired. */
  private entry(id: string): Entry | undefined {
    const entry = this.sessions.get(id);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= now()) {
      this.sessions.delete(id);
      return undefined;
    }
    return entry;
  }

  /** Removes every expired session. */
  private sweep(): void {
    const t = now();
    for (const [id, entry] of this.sessions) {
      if (entry.expiresAt <= t) this.sessions.delete(id);
    }
  }

  /** Number of sessions held (expired ones included until swept). */
  get size(): number {
    return this.sessions.size;
  }

  /** Makes room for one more session: drops expired ones, then the least recently used idle ones. */
  private makeRoom(): void {
    if (this.sessions.size < this.maxSessions) return;
    this.sweep();
    const t = now();
    // The map is in order of last use (create and release re-insert), so the first idle entries are the oldest.
    for (const [id, entry] of this.sessions) {
      if (this.sessions.size < this.maxSessions) return;
      if (entry.lease === undefined || entry.lease.until <= t) this.sessions.delete(id);
    }
  }

  async create(session: UploadSession): Promise<void> {
    this.sessions.delete(session.id);
    this.makeRoom();
    this.sessions.set(session.id, { json: encode(session), expiresAt: now() + this.ttlMs });
  }

  async get(id: string): Promise<UploadSession | null> {
    const entry = this.entry(id);
    return entry === undefined ? null : decode(entry.json);
  }

  // Everything between the lookup and the lease assignment is synchronous, so no other call can interleave:
  // that is what makes `acquire` atomic in one process.
  async acquire(id: string, expectedOffset: number | undefined, leaseMs: number): Promise<AcquireResult> {
    const entry = this.entry(id);
    if (entry === undefined) return { ok: false, reason: 'unknown' };
    const session = decode(entry.json);
    const t = now();
    if (entry.lease !== undefined && entry.lease.until > t) return { ok: false, reason: 'busy', session };
    if (expectedOffset !== undefined && expectedOffset !== session.offset) return { ok: false, reason: 'offset', session };
    const token = randomUUID();
    entry.lease = { token, until: t + leaseMs };
    return { ok: true, session, token };
  }

  async release(id: string, token: string, update: { offset: number; writerState?: WriterState }): Promise<boolean> {
    const entry = this.entry(id);
    // A token that still matches was not replaced by another acquire, even if its lease has run out meanwhile,
    // so nobody else can have written: storing the update is safe.
    if (entry === undefined || entry.lease?.token !== token) return false;
    const session = decode(entry.json);
    this.sessions.delete(id);
    this.sessions.set(id, {
      json: encode({ ...session, offset: update.offset, writerState: update.writerState }),
      expiresAt: now() + this.ttlMs,
    });
    return true;
  }

  async delete(id: string): Promise<void> {
    this.sessions.delete(id);
  }

  async health(): Promise<void> {}

  async close(): Promise<void> {
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.sessions.clear();
  }
}
