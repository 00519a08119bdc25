import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { redisClientOptions } from '../config/redis-addr.js';
import type { RegistryEvent } from './event.js';
import type { EventQueue, QueuedEvent } from './queue.js';

/*
 * Keys (under `redis.keyprefix`):
 *   events:<queue>        a list, one JSON {"queuedAt": ms, "event": {...}} per entry; RPUSH at the tail, delivered
 *                         from the head
 *   events:<queue>:claim  the id of the process that delivers this queue (SET NX PX, renewed while it works)
 * Only the claim holder removes entries (LTRIM, checked against the claim in the same script), so replicas sharing
 * Redis never deliver one event twice while the holder lives; when it dies, its claim runs out and another replica
 * continues from the head (the event it was sending when it died may then be sent again: at least once).
 */

/** KEYS[1] claim; ARGV[1] owner; ARGV[2] ttl ms. */
const CLAIM = `
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`;

/** KEYS[1] claim, KEYS[2] list; ARGV[1] owner; ARGV[2] how many entries to drop from the head. */
const ACK = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
return 1`;

/** KEYS[1] claim; ARGV[1] owner. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`;

/** Options of {@link RedisEventQueue.connect}. */
export interface RedisEventQueueOptions {
  addr: string;
  username?: string;
  password?: string;
  db: number;
  keyPrefix: string;
}

/** Event queues in Redis: one list per endpoint and a claim so that one replica delivers each endpoint. */
export class RedisEventQueue implements EventQueue {
  readonly kind = 'redis';
  /** This process's claim id. */
  readonly owner = randomUUID();

  constructor(
    private readonly redis: Redis,
    private readonly keyPrefix: string,
    private readonly ownsClient = false,
  ) {}

  /** A queue with its own client (closed by `close`). */
  static connect(options: RedisEventQueueOptions): RedisEventQueue {
    const redis = new Redis(redisClientOptions(options));
    // Failures surface as rejected commands (logged by the delivery loop); no unhandled 'error' events.
    redis.on('error', () => undefined);
    return new RedisEventQueue(redis, options.keyPrefix, true);
  }

  private list(queue: string): string {
    return `${this.keyPrefix}events:${queue}`;
  }

  private claimKey(queue: string): string {
    return `${this.keyPrefix}events:${queue}:claim`;
  }

  async push(queue: string, events: RegistryEvent[]): Promise<void> {
    if (events.length === 0) return;
    const now = Date.now();
    await this.redis.rpush(this.list(queue), ...events.map((event) => JSON.stringify({ queuedAt: now, event })));
  }

  async claim(queue: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.eval(CLAIM, 1, this.claimKey(queue), this.owner, String(Math.max(1, Math.round(ttlMs))))) === 1;
  }

  async release(queue: string): Promise<void> {
    await this.redis.eval(RELEASE, 1, this.claimKey(queue), this.owner);
  }

  async peek(queue: string, max: number): Promise<QueuedEvent[]> {
    const raw = await this.redis.lrange(this.list(queue), 0, max - 1);
    return raw.map((text, i) => {
      const parsed = JSON.parse(text) as { queuedAt: number; event: RegistryEvent };
      return { handle: String(i), queuedAt: parsed.queuedAt, event: parsed.event };
    });
  }

  async ack(queue: string, entries: QueuedEvent[]): Promise<boolean> {
    if (entries.length === 0) return true;
    return (await this.redis.eval(ACK, 2, this.claimKey(queue), this.list(queue), this.owner, String(entries.length))) === 1;
  }

  async stats(queue: string): Promise<{ pending: number; oldestQueuedAt: number | null }> {
    const [pending, head] = await Promise.all([this.redis.llen(this.list(queue)), this.redis.lindex(this.list(queue), 0)]);
    return { pending, oldestQueuedAt: head === null ? null : (JSON.parse(head) as { queuedAt: number }).queuedAt };
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
