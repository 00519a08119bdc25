import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';

/**
 * Who fills a blob now, as published to the other processes sharing the storage: the filler's `token` (one per
 * lease), the storage path of the upload file it writes (`.../_uploads/<id>/data`), and the blob's size once the
 * upstream declared it (`undefined` while the upstream has not answered, `null` when it sent no length).
 */
export interface FillHolder {
  token: string;
  path: string;
  size: number | null | undefined;
}

/** A held lease: the right to fetch one blob from its upstream and write it into storage. */
export interface FillLease {
  /** Tells the other processes the blob's size (null: the upstream declared none). Best effort. */
  publish(size: number | null): Promise<void>;
  /** Gives the lease up (after the commit, or after a failure); the other processes see nobody filling. Best effort. */
  release(): Promise<void>;
}

/**
 * The seam that decides which process fetches a blob from its upstream (the caller keeps one fill per blob within its
 * own process; this decides across processes).
 *
 * Contract:
 * - {@link acquire} gives the lease to at most one caller per key at a time; everyone else gets the holder's
 *   published {@link FillHolder}. A lease lasts while its holder's process lives (it is renewed in the background);
 *   a holder that dies loses it after a while, and the next `acquire` wins.
 * - {@link holder} reads the current holder without taking anything (null: nobody fills that key).
 * - Both throw when the coordinator cannot be reached; callers then fill on their own (a duplicate upstream fetch
 *   is harmless: content is addressed by its digest).
 */
export interface FillCoordinator {
  /** `local` (one process) or `redis` (every replica sharing the Redis). */
  readonly name: string;
  /** True when other processes may hold leases (their fills are followed through shared storage). */
  readonly shared: boolean;
  acquire(key: string, path: string): Promise<{ lease: FillLease } | { holder: FillHolder }>;
  holder(key: string): Promise<FillHolder | null>;
  close(): Promise<void>;
}

const NO_LEASE: FillLease = { publish: async () => undefined, release: async () => undefined };

/** Every caller gets the lease: without shared coordination each process fills on its own (single-flight is the caller's). */
export class LocalFillCoordinator implements FillCoordinator {
  readonly name = 'local';
  readonly shared = false;
  async acquire(): Promise<{ lease: FillLease }> {
    return { lease: NO_LEASE };
  }
  async holder(): Promise<FillHolder | null> {
    return null;
  }
  async close(): Promise<void> {}
}

/** Options of {@link RedisFillCoordinator}. */
export interface RedisFillCoordinatorOptions {
  /** Keys are `${keyPrefix}fill:<key>`. */
  keyPrefix: string;
  /** How long a lease outlives its holder's last renewal (default 10 s); renewed every third of it. */
  ttlMs?: number;
}

/** The lease value: `<token> <size> <path>`; size is `p` (pending), `u` (undeclared) or digits. No part holds a space. */
function encode(token: string, size: number | null | undefined, path: string): string {
  return `${token} ${size === undefined ? 'p' : size === null ? 'u' : String(size)} ${path}`;
}

function decode(value: string | null): FillHolder | null {
  if (value === null) return null;
  const m = /^(\S+) (p|u|\d+) (\/\S+)$/.exec(value);
  if (!m) return null;
  const size = m[2] === 'p' ? undefined : m[2] === 'u' ? null : Number(m[2]);
  return { token: m[1] as string, size, path: m[3] as string };
}

/** KEYS[1] lease, ARGV[1] token, ARGV[2] ttl ms: extends the lease only while the token still holds it. */
const RENEW = `local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;
/** KEYS[1] lease, ARGV[1] token, ARGV[2] new value: replaces the value (keeping the expiry) only for the holder. */
const UPDATE = `local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') return 1 end
return 0`;
/** KEYS[1] lease, ARGV[1] token: deletes the lease only for its holder. */
const RELEASE = `local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then return redis.call('DEL', KEYS[1]) end
return 0`;

/**
 * Fill leases in Redis, shared by every replica configured with the same `redis` section: one key per blob fill
 * (`<keyprefix>fill:<upstream>/<repository>@<digest>`) taken with `SET NX PX`, renewed by its holder every third of the TTL and
 * changed or deleted only by the holder (compare-and-set scripts on the token). A holder that dies stops renewing:
 * its lease expires after the TTL and a follower takes over.
 */
export class RedisFillCoordinator implements FillCoordinator {
  readonly name = 'redis';
  readonly shared = true;
  private readonly ttlMs: number;
  private readonly renewals = new Set<NodeJS.Timeout>();

  constructor(
    private readonly redis: Redis,
    private readonly options: RedisFillCoordinatorOptions,
  ) {
    this.ttlMs = options.ttlMs ?? 10_000;
  }

  private key(key: string): string {
    return `${this.options.keyPrefix}fill:${key}`;
  }

  async acquire(key: string, path: string): Promise<{ lease: FillLease } | { holder: FillHolder }> {
    const redisKey = this.key(key);
    const token = randomUUID();
    for (let attempt = 0; attempt < 3; attempt++) {
      const set = await this.redis.set(redisKey, encode(token, undefined, path), 'PX', this.ttlMs, 'NX');
      if (set === 'OK') return { lease: this.lease(redisKey, token, path) };
      const holder = decode(await this.redis.get(redisKey));
      if (holder) return { holder };
      // Expired (or unreadable) between the two commands: try again.
    }
    throw new Error(`cannot take or read the fill lease ${redisKey}`);
  }

  private lease(redisKey: string, token: string, path: string): FillLease {
    const timer = setInterval(
      () => {
        this.redis.eval(RENEW, 1, redisKey, token, String(this.ttlMs)).catch(() => undefined);
      },
      Math.max(100, Math.floor(this.ttlMs / 3)),
    );
    timer.unref();
    this.renewals.add(timer);
    let released = false;
    return {
      publish: async (size) => {
        await this.redis.eval(UPDATE, 1, redisKey, token, encode(token, size, path));
      },
      release: async () => {
        if (released) return;
        released = true;
        clearInterval(timer);
        this.renewals.delete(timer);
        await this.redis.eval(RELEASE, 1, redisKey, token);
      },
    };
  }

  async holder(key: string): Promise<FillHolder | null> {
    return decode(await this.redis.get(this.key(key)));
  }

  async close(): Promise<void> {
    for (const t of this.renewals) clearInterval(t);
    this.renewals.clear();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}
