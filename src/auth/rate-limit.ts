import { RegistryError } from '../errors/registry-error.js';

/**
 * Failed-login limiter per client address: after `failures` failed logins within `windowMs` of the first one, every
 * further login attempt from that address gets 429 TOOMANYREQUESTS until the window ends (checked before the
 * password, so a blocked client cannot keep guessing). A successful login clears the address.
 */
export class FailureLimiter {
  private readonly entries = new Map<string, { count: number; until: number }>();

  constructor(private readonly failures: number, private readonly windowMs: number, private readonly now: () => number = Date.now) {}

  /** Throws TOOMANYREQUESTS (with `Retry-After`) when `ip` is blocked. */
  check(ip: string): void {
    const e = this.entries.get(ip);
    if (!e) return;
    const now = this.now();
    if (now >= e.until) {
      this.entries.delete(ip);
      return;
    }
    if (e.count >= this.failures) {
      throw new RegistryError('TOOMANYREQUESTS', undefined, {
        message: 'too many failed login attempts',
        headers: { 'Retry-After': String(Math.max(1, Math.ceil((e.until - now) / 1000))) },
      });
    }
  }

  /** Records a failed login from `ip`. */
  fail(ip: string): void {
    const now = this.now();
    const e = this.entries.get(ip);
    if (e && now < e.until) {
      e.count++;
      return;
    }
    if (this.entries.size >= 10_000) this.prune(now);
    this.entries.set(ip, { count: 1, until: now + this.windowMs });
  }

  /** Forgets `ip` after a successful login. */
  succeed(ip: string): void {
    this.entries.delete(ip);
  }

  private prune(now: number): void {
    for (const [ip, e] of this.entries) if (now >= e.until) this.entries.delete(ip);
    if (this.entries.size >= 10_000) this.entries.clear();
  }
}
