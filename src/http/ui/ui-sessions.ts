import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** A logged-in web UI session. */
export interface UiSession {
  account: string;
  /** Epoch ms after which the session is gone. */
  expires: number;
}

/** Options of {@link UiSessions}. */
export interface UiSessionOptions {
  /** Idle lifetime: each use extends the session by this much (default 1 h). */
  idleMs?: number;
  /** Absolute lifetime from login (default 12 h). */
  maxMs?: number;
  /** At most this many sessions; the oldest goes first (default 10 000). */
  maxSessions?: number;
  now?: () => number;
}

/**
 * The web UI's sessions: the cookie holds an opaque random id (32 bytes); the server keeps id → account in a bounded
 * in-process map with idle and absolute expiry. Every visitor has an id (logged in or not), so every form carries a
 * CSRF token: an HMAC of the id under a per-process secret, checked on every POST. A login issues a new id (no
 * session fixation); a logout forgets it.
 */
export class UiSessions {
  private readonly sessions = new Map<string, UiSession & { started: number }>();
  private readonly secret = randomBytes(32);
  private readonly idleMs: number;
  private readonly maxMs: number;
  private readonly maxSessions: number;
  private readonly now: () => number;

  constructor(options: UiSessionOptions = {}) {
    this.idleMs = options.idleMs ?? 3_600_000;
    this.maxMs = options.maxMs ?? 12 * 3_600_000;
    this.maxSessions = options.maxSessions ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /** A fresh random id for a cookie. */
  static newId(): string {
    return randomBytes(32).toString('base64url');
  }

  /** True when `id` has the shape of an id this class issues. */
  static isId(id: string | undefined): id is string {
    return id !== undefined && /^[A-Za-z0-9_-]{43}$/.test(id);
  }

  /** Starts a logged-in session for `account` under a new id. */
  login(account: string): { id: string; session: UiSession } {
    const now = this.now();
    if (this.sessions.size >= this.maxSessions) this.prune(now);
    while (this.sessions.size >= this.maxSessions) {
      const oldest = this.sessions.keys().next().value;
      if (oldest === undefined) break;
      this.sessions.delete(oldest);
    }
    const id = UiSessions.newId();
    const session = { account, started: now, expires: Math.min(now + this.idleMs, now + this.maxMs) };
    this.sessions.set(id, session);
    return { id, session: { account, expires: session.expires } };
  }

  /** The live session of `id` (extending its idle time), or undefined. */
  get(id: string | undefined): UiSession | undefined {
    if (!UiSessions.isId(id)) return undefined;
    const s = this.sessions.get(id);
    if (!s) return undefined;
    const now = this.now();
    if (now >= s.expires) {
      this.sessions.delete(id);
      return undefined;
    }
    s.expires = Math.min(now + this.idleMs, s.started + this.maxMs);
    return { account: s.account, expires: s.expires };
  }

  /** Forgets `id`. */
  logout(id: string | undefined): void {
    if (id !== undefined) this.sessions.delete(id);
  }

  /** The CSRF token of the visitor with cookie id `id`. */
  csrfToken(id: string): string {
    return createHmac('sha256', this.secret).update(`csrf:${id}`).digest('base64url');
  }

  /** Whether `token` is the CSRF token of `id` (constant time). */
  checkCsrf(id: string | undefined, token: unknown): boolean {
    if (!UiSessions.isId(id) || typeof token !== 'string') return false;
    const want = Buffer.from(this.csrfToken(id));
    const got = Buffer.from(token);
    return want.length === got.length && timingSafeEqual(want, got);
  }

  /** Number of live sessions (for tests and metrics). */
  get size(): number {
    return this.sessions.size;
  }

  private prune(now: number): void {
    for (const [id, s] of this.sessions) if (now >= s.expires) this.sessions.delete(id);
  }
}
