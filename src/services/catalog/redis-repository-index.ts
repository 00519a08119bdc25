import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { BackendUnavailableError } from '../../errors/registry-error.js';
import { redisClientOptions } from '../../config/redis-addr.js';
import type { IndexEntry, RepositoryIndex } from './repository-index.js';

/*
 * Keys (under the configured prefix, e.g. `berth:`):
 *   index:names        sorted set, every score 0: ZRANGEBYLEX pages by name in O(log N + n)
 *   index:repo:<name>  hash {tagCount, size, lastPush, description, stamp}
 *   index:built        ms since the epoch of the last completed build
 *   index:deleted:<name>  ms of the repository's last delete, expiring with the upload session lifetime
 * `put` and `remove` are Lua scripts, so the stamp comparison and the write are atomic across replicas.
 */

/** KEYS[1] names, KEYS[2] entry; ARGV name, tagCount, size, lastPush, description, stamp. */
const PUT = `
local old = redis.call('HGET', KEYS[2], 'stamp')
if old and tonumber(old) > tonumber(ARGV[6]) then return 0 end
redis.call('HSET', KEYS[2], 'tagCount', ARGV[2], 'size', ARGV[3], 'lastPush', ARGV[4], 'description', ARGV[5], 'stamp', ARGV[6])
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return 1
`;

/** KEYS[1] names, KEYS[2] entry; ARGV name, before ('' for unconditional). */
const REMOVE = `
local old = redis.call('HGET', KEYS[2], 'stamp')
if ARGV[2] ~= '' and old and tonumber(old) > tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
`;

function sha(source: string): string {
  return createHash('sha1').update(source).digest('hex');
}

/** The catalog index in Redis, shared by every berth instance configured with the same `redis` section. */
export class RedisRepositoryIndex implements RepositoryIndex {
  readonly name = 'redis';
  private readonly namesKey: string;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly ownsClient = false,
  ) {
    this.namesKey = `${prefix}index:names`;
  }

  /** An index with its own client (closed by `close()`), connecting as the upload session store does. */
  static connect(options: { addr: string; username?: string; password?: string; db: number; keyPrefix: string }): RedisRepositoryIndex {
    const redis = new Redis(redisClientOptions(options, 5000));
    redis.on('error', () => {});
    return new RedisRepositoryIndex(redis, options.keyPrefix, true);
  }

  private entryKey(name: string): string {
    return `${this.prefix}index:repo:${name}`;
  }

  private async call<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof Error && err.name === 'ReplyError') throw err;
      throw new BackendUnavailableError('redis catalog index', { cause: err, backend: 'redis' });
    }
  }

  private async script(source: string, keys: string[], args: string[]): Promise<unknown> {
    return this.call(async () => {
      try {
        return await this.redis.evalsha(sha(source), keys.length, ...keys, ...args);
      } catch (err) {
        if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
        return await this.redis.eval(source, keys.length, ...keys, ...args);
      }
    });
  }

  async put(e: IndexEntry): Promise<void> {
    await this.script(
      PUT,
      [this.namesKey, this.entryKey(e.name)],
      [e.name, String(e.tagCount), String(e.size), e.lastPush ?? '', e.description, String(e.stamp)],
    );
  }

  async remove(name: string, before?: number): Promise<void> {
    await this.script(REMOVE, [this.namesKey, this.entryKey(name)], [name, before === undefined ? '' : String(before)]);
  }

  private static decode(name: string, h: Record<string, string>): IndexEntry | null {
    if (h.stamp === undefined) return null;
    return {
      name,
      tagCount: Number(h.tagCount ?? 0),
      size: Number(h.size ?? 0),
      lastPush: h.lastPush ? h.lastPush : null,
      description: h.description ?? '',
      stamp: Number(h.stamp),
    };
  }

  async get(name: string): Promise<IndexEntry | null> {
    const h = await this.call(() => this.redis.hgetall(this.entryKey(name)));
    return RedisRepositoryIndex.decode(name, h);
  }

  async page(after: string | undefined, n: number): Promise<IndexEntry[]> {
    if (n <= 0) return [];
    // `(name` is exclusive; `-` is the start. Names never contain the bytes ZRANGEBYLEX treats specially at the
    // start of an argument ('(' '[' '-' '+' are not valid first characters of a repository name).
    const names = await this.call(() => this.redis.zrangebylex(this.namesKey, after === undefined ? '-' : `(${after}`, '+', 'LIMIT', 0, n));
    if (names.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const name of names) pipeline.hgetall(this.entryKey(name));
    const results = await this.call(() => pipeline.exec());
    const out: IndexEntry[] = [];
    names.forEach((name, i) => {
      const [err, h] = results?.[i] ?? [null, null];
      if (err || !h) return;
      // A name removed between the two calls has no hash any more: it is left out of the page.
      const e = RedisRepositoryIndex.decode(name, h as Record<string, string>);
      if (e) out.push(e);
    });
    return out;
  }

  async builtAt(): Promise<number | null> {
    const v = await this.call(() => this.redis.get(`${this.prefix}index:built`));
    return v === null ? null : Number(v);
  }

  async markBuilt(at: number): Promise<void> {
    await this.call(() => this.redis.set(`${this.prefix}index:built`, String(at)));
  }

  async markDeleted(name: string, at: number, ttlMs: number): Promise<void> {
    await this.call(() => this.redis.set(`${this.prefix}index:deleted:${name}`, String(at), 'PX', Math.max(1, Math.round(ttlMs))));
  }

  async deletedAt(name: string): Promise<number | null> {
    const v = await this.call(() => this.redis.get(`${this.prefix}index:deleted:${name}`));
    return v === null ? null : Number(v);
  }

  async count(): Promise<number> {
    return this.call(() => this.redis.zcard(this.namesKey));
  }

  async clear(): Promise<void> {
    // In batches, so a large index never becomes one huge command.
    for (;;) {
      const names = await this.call(() => this.redis.zrange(this.namesKey, 0, 499));
      if (names.length === 0) break;
      await this.call(() => this.redis.del(...names.map((n) => this.entryKey(n))));
      await this.call(() => this.redis.zrem(this.namesKey, ...names));
    }
    await this.call(() => this.redis.del(`${this.prefix}index:built`));
    let cursor = '0';
    do {
      const [nextCursor, keys] = await this.call(() => this.redis.scan(cursor, 'MATCH', `${this.prefix}index:deleted:*`, 'COUNT', 1000));
      if (keys.length > 0) await this.call(() => this.redis.del(...keys));
      cursor = nextCursor;
    } while (cursor !== '0');
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
