import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { BackendUnavailableError } from '../errors/registry-error.js';
import { parseRedisAddr } from '../config/redis-addr.js';
import type { InvalidationChannel } from './link-cache.js';

/** Where to connect: the `redis` section of the config. */
export interface RedisInvalidationOptions {
  addr: string;
  username?: string;
  password?: string;
  db: number;
  /** The channel is `${keyPrefix}storage-changed`. */
  keyPrefix: string;
}

/**
 * Cache invalidation across the processes that share one storage, over Redis pub/sub (channel
 * `<keyprefix>storage-changed`, messages `{"from":<process id>,"paths":[...]}`). Two connections: one subscribed,
 * one publishing. {@link live} is true only while the subscription is in place; on every (re)subscription the
 * receiver is told to drop everything, as messages sent while it was away are lost.
 */
export class RedisInvalidationChannel implements InvalidationChannel {
  private readonly id = randomUUID();
  private readonly channel: string;
  private readonly sub: Redis;
  private readonly pub: Redis;
  private subscribed = false;
  private onPaths: ((paths: string[]) => void) | undefined;
  private onReset: (() => void) | undefined;
  private closed = false;

  constructor(options: RedisInvalidationOptions) {
    const { host, port } = parseRedisAddr(options.addr);
    const common = {
      host,
      port,
      username: options.username,
      password: options.password,
      db: options.db,
      connectTimeout: 2000,
      retryStrategy: (times: number) => Math.min(100 * times, 1000),
    };
    this.channel = `${options.keyPrefix}storage-changed`;
    this.sub = new Redis({ ...common, autoResubscribe: false });
    this.pub = new Redis({ ...common, commandTimeout: 2000, maxRetriesPerRequest: 1, enableOfflineQueue: true });
    // Errors are seen as lost connections (live turns false) and as failed publishes; nothing to print here.
    this.sub.on('error', () => undefined);
    this.pub.on('error', () => undefined);
    this.sub.on('ready', () => {
      this.sub.subscribe(this.channel).then(
        () => {
          this.subscribed = true;
          this.onReset?.();
        },
        () => this.sub.disconnect(true),
      );
    });
    this.sub.on('close', () => {
      if (this.subscribed) this.onReset?.();
      this.subscribed = false;
    });
    this.sub.on('message', (channel: string, message: string) => {
      if (channel !== this.channel) return;
      let parsed: { from?: unknown; paths?: unknown };
      try {
        parsed = JSON.parse(message) as { from?: unknown; paths?: unknown };
      } catch {
        this.onReset?.();
        return;
      }
      if (parsed.from === this.id) return;
      if (!Array.isArray(parsed.paths) || !parsed.paths.every((p) => typeof p === 'string')) {
        this.onReset?.();
        return;
      }
      this.onPaths?.(parsed.paths as string[]);
    });
  }

  get live(): boolean {
    return this.subscribed && !this.closed;
  }

  subscribe(onPaths: (paths: string[]) => void, onReset: () => void): void {
    this.onPaths = onPaths;
    this.onReset = onReset;
  }

  /** Resolves once the subscription is in place (start-up, tests); rejects after `timeoutMs`. */
  async ready(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.live) {
      if (Date.now() > deadline) throw new BackendUnavailableError('redis (cache invalidation channel)', { backend: 'redis' });
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async publish(paths: string[]): Promise<void> {
    try {
      await this.pub.publish(this.channel, JSON.stringify({ from: this.id, paths }));
    } catch (err) {
      throw new BackendUnavailableError('redis (cache invalidation channel)', { cause: err, backend: 'redis' });
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.sub.disconnect();
    await this.pub.quit().catch(() => this.pub.disconnect());
  }
}
