import { createHash, randomUUID } from 'node:crypto';
import { redisClientOptions } from '../config/redis-addr.js';
import { Redis } from 'ioredis';
import { BackendUnavailableError } from '../errors/registry-error.js';
import type { WriterState } from '../storage/driver.js';
import type { AcquireResult, UploadSession, UploadSessionStore } from './session-store.js';

/** Options of {@link RedisSessionStore} over a client the caller already has. */
export interface RedisSessionStoreOptions {
  /** The client. The store quits it on `close()` only when `ownsClient` is true. */
  redis: Redis;
  /** Prepended to every key, e.g. `berth:`; sessions live under `${keyPrefix}upload:${id}`. */
  keyPrefix: string;
  /** How long an untouched session lives. */
  ttlMs: number;
  ownsClient?: boolean;
}

/** Options of {@link RedisSessionStore.connect}, which creates (and owns) its client. */
export interface RedisConnectOptions {
  /** `host:port`, e.g. `127.0.0.1:6379` or `[::1]:6379`. */
  addr: string;
  username?: string;
  password?: string;
  db: number;
  keyPrefix: string;
  ttlMs: number;
}

/**
 * A Lua script run with EVALSHA, falling back to EVAL when Redis does not know it yet (first use, or Redis
 * restarted and lost its script cache).
 */
class Script {
  readonly sha: string;
  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  async run(redis: Redis, key: string, args: string[]): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, 1, key, ...args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return await redis.eval(this.source, 1, key, ...args);
    }
  }
}

/*
 * The session hash. Lua reads and writes only `offset`, `lease` and `leaseUntil`; the JSON fields are opaque to it.
 *   offset      decimal bytes accepted so far
 *   data        JSON {repository, startedAt}: written by create, never changed afterwards
 *   writerState JSON of the driver's WriterState; absent before the first byte
 *   lease       token of the current write lease (absent when free)
 *   leaseUntil  Redis-clock milliseconds at which the lease runs out
 */

/**
 * KEYS[1] session; ARGV[1] expected offset or '' for any; ARGV[2] lease ms; ARGV[3] new token.
 * Lease times come from Redis `TIME`, so the clocks of the berth instances do not matter.
 */
const ACQUIRE = new Script(`
local h = redis.call('HMGET', KEYS[1], 'offset', 'data', 'writerState', 'lease', 'leaseUntil')
if not h[1] then return {'unknown'} end
local state = h[3] or ''
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if h[4] and tonumber(h[5]) > now then return {'busy', h[1], h[2], state} end
if ARGV[1] ~= '' and ARGV[1] ~= h[1] then return {'offset', h[1], h[2], state} end
redis.call('HSET', KEYS[1], 'lease', ARGV[3], 'leaseUntil', string.format('%.0f', now + tonumber(ARGV[2])))
return {'ok', h[1], h[2], state}
`);

/** KEYS[1] session; ARGV[1] token; ARGV[2] offset; ARGV[3] writerState JSON or '' for none; ARGV[4] TTL ms. */
const RELEASE = new Script(`
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'offset', ARGV[2])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'writerState', 'lease', 'leaseUntil')
else
  redis.call('HSET', KEYS[1], 'writerState', ARGV[3])
  redis.call('HDEL', KEYS[1], 'lease', 'leaseUntil')
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`);

/** Error replies that mean "Redis cannot serve right now", as opposed to a bug in what we sent. */
const UNAVAILABLE_REPLIES = /^(LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN|NOAUTH|WRONGPASS|NOPERM|OOM)\b/;

/** ioredis reports Redis error replies as `ReplyError`; anything else it rejects with is about the connection. */
function isBackendDown(err: unknown): boolean {
  if (!(err instanceof Error)) return true;
  if (err.name !== 'ReplyError') return true;
  return UNAVAILABLE_REPLIES.test(err.message);
}

export { parseRedisAddr } from '../config/redis-addr.js';

function sessionFrom(id: string, offset: unknown, data: unknown, writerState: unknown): UploadSession {
  if (typeof offset !== 'string' || typeof data !== 'string') throw new Error(`corrupt upload session ${id} in redis`);
  const parsed = JSON.parse(data) as { repository?: unknown; startedAt?: unknown };
  if (typeof parsed.repository !== 'string' || typeof parsed.startedAt !== 'number') {
    throw new Error(`corrupt upload session ${id} in redis`);
  }
  const session: UploadSession = { id, repository: parsed.repository, offset: Number(offset), startedAt: parsed.startedAt };
  if (typeof writerState === 'string' && writerState !== '') session.writerState = JSON.parse(writerState) as WriterState;
  return session;
}

/**
 * Upload sessions in Redis, so any berth instance continues any upload. One hash per session; `acquire` and
 * `release` are single Lua scripts, which Redis runs atomically.
 *
 * Failures to reach Redis reject with {@link BackendUnavailableError}. With a client from {@link connect} they
 * do so within about two seconds instead of waiting for Redis to come back.
 */
export class RedisSessionStore implements UploadSessionStore {
  readonly name = 'redis';
  readonly redis: Redis;
  private readonly keyPrefix: string;
  private readonly ttlMs: number;
  private readonly ownsClient: boolean;
  private lastConnectionError: Error | undefined;

  constructor(options: RedisSessionStoreOptions) {
    if (!(options.ttlMs > 0)) throw new RangeError('ttlMs must be a positive number of milliseconds');
    this.redis = options.redis;
    this.keyPrefix = options.keyPrefix;
    this.ttlMs = Math.ceil(options.ttlMs);
    this.ownsClient = options.ownsClient ?? false;
    if (this.ownsClient) {
      // Without a listener ioredis prints every failed reconnect; remember the latest for health() instead.
      this.redis.on('error', (err: Error) => {
        this.lastConnectionError = err;
      });
      this.redis.on('ready', () => {
        this.lastConnectionError = undefined;
      });
    }
  }

  /**
   * A store with its own client, quit by `close()`. It connects in the background and reconnects forever;
   * while Redis is unreachable, commands fail after at most about two seconds:
   * - `commandTimeout` bounds every command, including one waiting in the offline queue or sent to a server
   *   that accepted the connection but does not answer;
   * - `maxRetriesPerRequest: 1` rejects queued commands after the first failed reconnect;
   * - the offline queue stays on so the requests right after start-up, or during a brief reconnect, succeed.
   */
  static connect(options: RedisConnectOptions): RedisSessionStore {
    const redis = new Redis(redisClientOptions(options));
    return new RedisSessionStore({ redis, keyPrefix: options.keyPrefix, ttlMs: options.ttlMs, ownsClient: true });
  }

  private key(id: string): string {
    return `${this.keyPrefix}upload:${id}`;
  }

  /** Runs a Redis operation, turning "cannot reach Redis" into BackendUnavailableError. */
  private async call<T>(operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (err) {
      if (isBackendDown(err)) throw new BackendUnavailableError('redis upload session store', { cause: err, backend: 'redis' });
      throw err;
    }
  }

  async create(session: UploadSession): Promise<void> {
    const key = this.key(session.id);
    const fields: Record<string, string> = {
      offset: String(session.offset),
      data: JSON.stringify({ repository: session.repository, startedAt: session.startedAt }),
    };
    if (session.writerState !== undefined) fields.writerState = JSON.stringify(session.writerState);
    const results = await this.call(() => this.redis.multi().del(key).hset(key, fields).pexpire(key, this.ttlMs).exec());
    if (results === null) throw new BackendUnavailableError('redis upload session store', { backend: 'redis' });
    for (const [err] of results) {
      if (err !== null) throw err;
    }
  }

  async get(id: string): Promise<UploadSession | null> {
    const [offset, data, writerState] = await this.call(() => this.redis.hmget(this.key(id), 'offset', 'data', 'writerState'));
    if (offset === null || offset === undefined) return null;
    return sessionFrom(id, offset, data, writerState);
  }

  async acquire(id: string, expectedOffset: number | undefined, leaseMs: number): Promise<AcquireResult> {
    const token = randomUUID();
    const args = [expectedOffset === undefined ? '' : String(expectedOffset), String(Math.ceil(leaseMs)), token];
    const reply = await this.call(() => ACQUIRE.run(this.redis, this.key(id), args));
    if (!Array.isArray(reply) || typeof reply[0] !== 'string') throw new Error('unexpected reply from the acquire script');
    const [reason, offset, data, writerState] = reply as unknown[];
    if (reason === 'unknown') return { ok: false, reason: 'unknown' };
    const session = sessionFrom(id, offset, data, writerState);
    if (reason === 'ok') return { ok: true, session, token };
    if (reason === 'busy' || reason === 'offset') return { ok: false, reason, session };
    throw new Error(`unexpected reply from the acquire script: ${String(reason)}`);
  }

  async release(id: string, token: string, update: { offset: number; writerState?: WriterState }): Promise<boolean> {
    const state = update.writerState === undefined ? '' : JSON.stringify(update.writerState);
    const args = [token, String(update.offset), state, String(this.ttlMs)];
    const reply = await this.call(() => RELEASE.run(this.redis, this.key(id), args));
    return reply === 1;
  }

  async delete(id: string): Promise<void> {
    await this.call(() => this.redis.del(this.key(id)));
  }

  async health(): Promise<void> {
    const pong = await this.call(() => this.redis.ping());
    if (pong !== 'PONG') throw new BackendUnavailableError('redis upload session store', { cause: this.lastConnectionError, backend: 'redis' });
  }

  async close(): Promise<void> {
    if (!this.ownsClient) return;
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}
