import { RegistryError } from '../errors/registry-error.js';

/** At most this many addresses and this many account names are tracked (each); the oldest entries go first. */
const DEFAULT_MAX_ENTRIES = 10_000;

interface Entry {
  /** Failed logins in the current window. */
  failures: number;
  /** Password checks running right now (each may still turn out a failure). */
  pending: number;
  /** When the window (started by the first failure) ends. */
  until: number;
}

/** A password check admitted by {@link FailureLimiter.begin}; report its outcome exactly once. */
export interface LoginAttempt {
  /** The password was right: the attempt leaves no trace (it does not clear earlier failures). */
  succeeded(): void;
  /** The password was wrong: it counts against the address and the account. */
  failed(): void;
}

/**
 * Failed-login limiter, per client address and per account name: after `failures` failed logins within `windowMs`
 * of the first one, every further attempt from that address, or for that account from anywhere, gets 429
 * TOOMANYREQUESTS until the window ends. The check comes before the password, so a blocked client cannot keep
 * guessing.
 *
 * - No success clears a count: a guesser cannot reset it by interleaving a good login of another account, and the
 *   failures of an account stay counted whoever logs in meanwhile. Counts end with their window.
 * - Checks that run in parallel count while they run: an attempt is admitted only while failures plus running
 *   checks stay under the limit, others wait for a running check to end (then 100 parallel wrong passwords get
 *   exactly `failures` checks; 100 parallel right ones all pass, a few at a time).
 * - Memory is bounded: at most `maxEntries` addresses and as many accounts; when full, expired entries are dropped,
 *   then the oldest idle ones.
 */
export class FailureLimiter {
  private readonly byAddress = new Map<string, Entry>();
  private readonly byAccount = new Map<string, Entry>();
  private readonly waiters = new Set<() => void>();

  constructor(
    private readonly failures: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
    private readonly maxEntries: number = DEFAULT_MAX_ENTRIES,
  ) {}

  /**
   * Admits one password check for `account` from `ip`: resolves once it may run (waiting while too many checks for
   * the same address or account are running), or throws TOOMANYREQUESTS (with `Retry-After`) when either is blocked.
   * Without `account` (a refresh token names its account only once verified) only the address counts.
   */
  async begin(ip: string, account?: string): Promise<LoginAttempt> {
    for (;;) {
      const now = this.now();
      const a = this.live(this.byAddress, ip, now);
      const b = account === undefined ? undefined : this.live(this.byAccount, account, now);
      const blocked = [a, b].filter((e): e is Entry => e !== undefined && e.failures >= this.failures);
      if (blocked.length > 0) {
        const until = Math.max(...blocked.map((e) => e.until));
        throw new RegistryError('TOOMANYREQUESTS', undefined, {
          message: 'too many failed login attempts',
          headers: { 'Retry-After': String(Math.max(1, Math.ceil((until - now) / 1000))) },
        });
      }
      const full = (e: Entry | undefined): boolean => e !== undefined && e.failures + e.pending >= this.failures;
      if (!full(a) && !full(b)) {
        const entries: Array<[Map<string, Entry>, string, Entry]> = [[this.byAddress, ip, a ?? this.add(this.byAddress, ip, now)]];
        if (account !== undefined) entries.push([this.byAccount, account, b ?? this.add(this.byAccount, account, now)]);
        for (const [, , e] of entries) e.pending++;
        return this.attempt(entries);
      }
      await new Promise<void>((resolve) => this.waiters.add(resolve));
    }
  }

  /** Number of addresses and accounts tracked (for tests of the memory bound). */
  get size(): { addresses: number; accounts: number } {
    return { addresses: this.byAddress.size, accounts: this.byAccount.size };
  }

  private attempt(entries: Array<[Map<string, Entry>, string, Entry]>): LoginAttempt {
    let done = false;
    const settle = (failed: boolean): void => {
      if (done) return;
      done = true;
      const now = this.now();
      for (const [map, key, e] of entries) {
        e.pending--;
        if (failed) {
          // The window starts with the first failure.
          if (e.failures === 0 || now >= e.until) {
            e.failures = 0;
            e.until = now + this.windowMs;
          }
          e.failures++;
        } else if (e.pending === 0 && e.failures === 0 && map.get(key) === e) {
          map.delete(key);
        }
      }
      const waiting = [...this.waiters];
      this.waiters.clear();
      for (const wake of waiting) wake();
    };
    return { succeeded: () => settle(false), failed: () => settle(true) };
  }

  /** The entry of `key` if it still counts something (an expired, idle one is dropped). */
  private live(map: Map<string, Entry>, key: string, now: number): Entry | undefined {
    const e = map.get(key);
    if (!e) return undefined;
    if ((now >= e.until || e.failures === 0) && e.pending === 0) {
      map.delete(key);
      return undefined;
    }
    if (now >= e.until) {
      e.failures = 0;
      e.until = now + this.windowMs;
    }
    return e;
  }

  private add(map: Map<string, Entry>, key: string, now: number): Entry {
    if (map.size >= this.maxEntries) this.evict(map, now);
    const e: Entry = { failures: 0, pending: 0, until: now + this.windowMs };
    map.set(key, e);
    return e;
  }

  /** Drops expired idle entries; if still full, the oldest idle ones (maps iterate in insertion order). */
  private evict(map: Map<string, Entry>, now: number): void {
    for (const [k, e] of map) if (now >= e.until && e.pending === 0) map.delete(k);
    for (const [k, e] of map) {
      if (map.size < this.maxEntries) break;
      if (e.pending === 0) map.delete(k);
    }
  }
}
