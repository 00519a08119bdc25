import type { Readable } from 'node:stream';
import {
  PathNotFoundError,
  type FileInfo,
  type FileWriter,
  type SignalOption,
  type StorageDriver,
  type WalkOptions,
  type WriterOptions,
  type WriterState,
} from './driver.js';
import type { Config } from '../config/config.js';
import { paths } from './paths.js';

/**
 * An in-memory cache of the small, hot metadata reads in front of a {@link StorageDriver}: the link files (what a
 * tag points at, which manifests and blobs a repository has). They are read on every manifest and blob request and
 * change rarely.
 *
 * Correctness rests on one rule: every change to storage made in this process goes through this driver, so it
 * drops what it changes before the change is reported done. The cache sits at the driver seam rather than in
 * one store on purpose: uploads, manifest pushes, tag and manifest deletes, the pull-through cache, expiry, gc and
 * fsck all write through the driver, so none of them (and no writer added later) can forget to invalidate.
 * - Changes made by other processes reach it through an {@link InvalidationChannel} (Redis pub/sub when `redis` is
 *   configured): a process publishes every path it changed before the change is reported done, every other process
 *   drops it. While the channel is not connected nothing is served from the cache, and whatever it held is dropped
 *   when it (re)connects, since messages may have been missed meanwhile.
 * - Entries also expire after `ttlMs`, which bounds staleness for writers that announce nothing (another program
 *   sharing the storage, a process without Redis).
 * - A read that overlaps a change is not cached (a generation counter), so a value read before an invalidation can
 *   never be stored after it.
 */

/** Options of {@link LinkCache}. */
export interface LinkCacheOptions {
  /** How long an entry is served, ms (> 0). */
  ttlMs: number;
  /** At most this many entries; the oldest are dropped first. */
  maxEntries: number;
  /** Cross-process invalidation; without it the process must be the only writer (else `ttlMs` bounds staleness). */
  channel?: InvalidationChannel;
  /** The clock, ms (tests). */
  now?: () => number;
}

/**
 * Tells other processes sharing the storage which paths changed, and hears what they changed. Implementations:
 * Redis pub/sub (`redis-invalidation.ts`).
 */
export interface InvalidationChannel {
  /** True while messages are being received (the cache is used only then). */
  readonly live: boolean;
  /** Announces that `paths` changed (each one: the file, or everything under that directory). */
  publish(paths: string[]): Promise<void>;
  /** Registers the receiver: `onPaths` for other processes' changes, `onReset` when messages may have been lost. */
  subscribe(onPaths: (paths: string[]) => void, onReset: () => void): void;
  close(): Promise<void>;
}

type Entry = { at: number; value: Buffer | null };

/** The repositories subtree: link files live under it. */
const REPOSITORIES = `${paths.repositoriesRoot}/`;
/** The global blob store: `.../blobs/<alg>/<xx>/<hex>/data`. */
const BLOBS = `${paths.blobsRoot}/`;

/**
 * Link files (`.../link`) in repositories are cached. Whether blob data exists is always asked of storage: a blob
 * that `berth gc` or `berth fsck --repair` removed from another process must never be reported present, or a client
 * would skip uploading it again.
 */
function cacheableContent(path: string): boolean {
  return path.startsWith(REPOSITORIES) && path.endsWith('/link');
}

/** Changes to these paths cannot hold a cached link below them: no scan for entries under them. */
function holdsNoLinks(path: string): boolean {
  return path.endsWith('/link') || path.includes('/_uploads/') || path.startsWith(BLOBS) || !path.startsWith(REPOSITORIES);
}

/** The cache itself: entries by path, dropped by path or by directory. */
export class LinkCache {
  private readonly entries = new Map<string, Entry>();
  private generation = 0;
  private readonly now: () => number;

  constructor(private readonly options: LinkCacheOptions) {
    this.now = options.now ?? Date.now;
    options.channel?.subscribe(
      (changed) => this.drop(changed),
      () => this.clear(),
    );
  }

  /** Whether entries may be served now. */
  get usable(): boolean {
    return this.options.channel ? this.options.channel.live : true;
  }

  /** The entry for `path` while fresh, else undefined. */
  get(path: string): Entry | undefined {
    if (!this.usable) return undefined;
    const e = this.entries.get(path);
    if (!e) return undefined;
    if (this.now() - e.at >= this.options.ttlMs) {
      this.entries.delete(path);
      return undefined;
    }
    return e;
  }

  /** A token to pass to {@link set}: a read started at it is stored only if nothing changed meanwhile. */
  begin(): number {
    return this.generation;
  }

  /**
   * Changes seen so far (local or announced, and resets). A value derived from cached entries stays right while
   * this is unchanged, the cache {@link usable} and those entries fresh: see {@link DerivedCache}.
   */
  get version(): number {
    return this.generation;
  }

  /** When the fresh entry for `path` was read from storage (ms on the cache's clock), or undefined. */
  readAt(path: string): number | undefined {
    return this.get(path)?.at;
  }

  /** The cache's clock, ms. */
  clock(): number {
    return this.now();
  }

  /** How long an entry is served, ms. */
  get ttlMs(): number {
    return this.options.ttlMs;
  }

  /** At most this many entries. */
  get maxEntries(): number {
    return this.options.maxEntries;
  }

  set(path: string, value: Entry['value'], token: number): void {
    if (token !== this.generation || !this.usable) return;
    this.entries.delete(path);
    this.entries.set(path, { at: this.now(), value });
    if (this.entries.size > this.options.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
  }

  /** Drops the entries at or under each of `changed` (a file, or a directory and everything in it). */
  drop(changed: string[]): void {
    this.generation++;
    for (const p of changed) {
      if (p === '/' || p === paths.repositoriesRoot || p === '/docker' || p === '/docker/registry' || p === '/docker/registry/v2') {
        this.entries.clear();
        return;
      }
    }
    for (const p of changed) this.entries.delete(p);
    const dirs = changed.filter((p) => !holdsNoLinks(p)).map((p) => `${p}/`);
    if (dirs.length === 0) return;
    for (const key of this.entries.keys()) {
      if (dirs.some((d) => key.startsWith(d))) this.entries.delete(key);
    }
  }

  /** Drops everything. */
  clear(): void {
    this.generation++;
    this.entries.clear();
  }

  /** Drops `changed` here and announces it to the other processes. */
  async invalidate(changed: string[]): Promise<void> {
    this.drop(changed);
    await this.options.channel?.publish(changed);
  }

  /** Number of entries (tests, metrics). */
  get size(): number {
    return this.entries.size;
  }

  async close(): Promise<void> {
    await this.options.channel?.close();
  }
}

/**
 * Values computed from link-cache entries (e.g. a tag's manifest: the tag link, then the revision link), held in
 * memory under two keys so the hot path skips re-reading those links one by one. The rule that keeps it exact: a
 * value is served only while the {@link LinkCache} saw no change since it was computed (its `version`), the cache is
 * usable (the invalidation channel, if any, is live), and the oldest entry it was computed from is still fresh. So
 * it is never staler than the entries themselves: any change the cache hears of drops all of it at once.
 */
export class DerivedCache<T> {
  private readonly values = new Map<string, Map<string, { at: number; value: T; weight: number }>>();
  private count = 0;
  private weight = 0;
  private seen: number;

  constructor(
    private readonly cache: LinkCache,
    private readonly options: DerivedCacheOptions<T> = {},
  ) {
    this.seen = cache.version;
  }

  private clear(): void {
    this.values.clear();
    this.count = 0;
    this.weight = 0;
  }

  /** The value under (`a`, `b`) while still exact, else undefined. */
  get(a: string, b: string): T | undefined {
    const cache = this.cache;
    if (cache.version !== this.seen) {
      this.clear();
      this.seen = cache.version;
      return undefined;
    }
    if (!cache.usable) return undefined;
    const e = this.values.get(a)?.get(b);
    if (!e) return undefined;
    if (cache.clock() - e.at >= cache.ttlMs) {
      this.values.get(a)?.delete(b);
      this.count--;
      this.weight -= e.weight;
      return undefined;
    }
    return e.value;
  }

  /** A token for {@link set}, taken before the reads the value is computed from. */
  begin(): number {
    return this.cache.version;
  }

  /**
   * Keeps `value`, computed from the cached entries at `from` by reads started at `token`. Not kept when anything
   * changed meanwhile or an entry is not (or no longer) in the cache: then nothing vouches for it.
   */
  set(a: string, b: string, value: T, token: number, from: string[]): void {
    const cache = this.cache;
    if (token !== cache.version || token !== this.seen || !cache.usable) return;
    let at = Infinity;
    for (const path of from) {
      const readAt = cache.readAt(path);
      if (readAt === undefined) return;
      at = Math.min(at, readAt);
    }
    const { weigh, maxWeight } = this.options;
    const weight = weigh ? weigh(value) : 0;
    // A value too large for its share of the budget is not kept (it would push out many others).
    if (maxWeight !== undefined && weight > maxWeight / 16) return;
    const old = this.values.get(a)?.get(b);
    if (old) {
      this.count--;
      this.weight -= old.weight;
    }
    if (this.count >= cache.maxEntries || (maxWeight !== undefined && this.weight + weight > maxWeight)) this.clear();
    let inner = this.values.get(a);
    if (!inner) this.values.set(a, (inner = new Map<string, { at: number; value: T; weight: number }>()));
    inner.set(b, { at, value, weight });
    this.count++;
    this.weight += weight;
  }

  /** Values kept (tests). */
  get size(): number {
    return this.count;
  }
}

/** Bounds of a {@link DerivedCache} besides the link cache's entry count. */
export interface DerivedCacheOptions<T> {
  /** What a value weighs (e.g. its bytes); with {@link maxWeight}, at most that much is kept. */
  weigh?: (value: T) => number;
  /** At most this much weight is kept; a value over a sixteenth of it is not kept at all. */
  maxWeight?: number;
}

/**
 * A {@link StorageDriver} that serves link reads from a {@link LinkCache} and invalidates it on every
 * change it passes on. The change is made first, then dropped and announced, and only then reported done: a
 * reader that hears of it (or is told by the writer's client) reads the new state.
 */
export class CachingDriver implements StorageDriver {
  readonly name: string;
  readonly redirectExpirySeconds?: number;
  readonly abortStaleUploads?: (before: Date) => Promise<number>;

  /**
   * With `serveFromCache` false, reads always go to storage while changes still invalidate and announce: the view
   * for garbage collection and fsck, which must decide from what storage holds this instant.
   */
  constructor(
    readonly inner: StorageDriver,
    readonly cache: LinkCache,
    readonly serveFromCache = true,
  ) {
    this.name = inner.name;
    if (inner.redirectExpirySeconds !== undefined) this.redirectExpirySeconds = inner.redirectExpirySeconds;
    if (inner.abortStaleUploads) this.abortStaleUploads = (before) => inner.abortStaleUploads!(before);
  }

  async getContent(path: string): Promise<Buffer> {
    if (!this.serveFromCache || !cacheableContent(path)) return this.inner.getContent(path);
    const hit = this.cache.get(path);
    if (hit) {
      if (hit.value === null) throw new PathNotFoundError(path);
      return hit.value as Buffer;
    }
    const token = this.cache.begin();
    try {
      const content = await this.inner.getContent(path);
      this.cache.set(path, content, token);
      return content;
    } catch (err) {
      if (err instanceof PathNotFoundError) this.cache.set(path, null, token);
      throw err;
    }
  }

  stat(path: string): Promise<FileInfo> {
    return this.inner.stat(path);
  }

  /**
   * Runs a change, then drops and announces what it touched, whether it succeeded or not (a failed change may have
   * happened in part). The change's own error wins over a failure to announce it.
   */
  private async changing<T>(changed: string[], op: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await op();
    } catch (err) {
      await this.cache.invalidate(changed).catch(() => undefined);
      throw err;
    }
    await this.cache.invalidate(changed);
    return result;
  }

  putContent(path: string, content: Buffer): Promise<void> {
    return this.changing([path], () => this.inner.putContent(path, content));
  }

  reader(path: string, offset?: number, length?: number, options?: SignalOption): Promise<Readable> {
    return this.inner.reader(path, offset, length, options);
  }

  async writer(path: string, state?: WriterState, options?: WriterOptions): Promise<FileWriter> {
    const w = await this.inner.writer(path, state, options);
    const changing = <T>(op: () => Promise<T>) => this.changing([path], op);
    return {
      get size() {
        return w.size;
      },
      copiesChunks: w.copiesChunks === true,
      write: (chunk) => w.write(chunk),
      close: () => w.close(),
      commit: () => changing(() => w.commit()),
      cancel: () => changing(() => w.cancel()),
    };
  }

  list(path: string, options?: SignalOption): Promise<string[]> {
    return this.inner.list(path, options);
  }

  walk(path: string, options?: WalkOptions): AsyncGenerator<FileInfo> {
    return this.inner.walk(path, options);
  }

  move(source: string, dest: string, options?: SignalOption): Promise<void> {
    return this.changing([source, dest], () => this.inner.move(source, dest, options));
  }

  delete(path: string): Promise<void> {
    return this.changing([path], () => this.inner.delete(path));
  }

  redirectURL(path: string, options: { method: 'GET' | 'HEAD'; expiresInSeconds: number }): Promise<string | null> {
    return this.inner.redirectURL(path, options);
  }

  health(): Promise<void> {
    return this.inner.health();
  }

  /** This driver with reads that bypass the cache (see the constructor); closing the view closes nothing. */
  uncachedReads(): StorageDriver {
    const view = new CachingDriver(this.inner, this.cache, false);
    view.close = async () => undefined;
    return view;
  }

  async close(): Promise<void> {
    await this.cache.close();
    await this.inner.close();
  }
}

/**
 * The link cache `berth.linkcache` asks for, in front of `driver`: with `redis` configured, invalidated across
 * processes over Redis pub/sub (loaded only then). Returns `driver` itself when the cache is off.
 *
 * `serveFromCache: false` (the `gc`/`fsck` commands) keeps the reads uncached but still announces every change, so
 * running servers drop what a command deleted at once.
 */
export async function withLinkCache(
  driver: StorageDriver,
  config: Pick<Config, 'redis' | 'berth'>,
  options: { serveFromCache?: boolean } = {},
): Promise<StorageDriver> {
  const { ttlMs, maxEntries } = config.berth.linkCache;
  if (ttlMs <= 0) return driver;
  let channel: InvalidationChannel | undefined;
  if (config.redis) {
    const { RedisInvalidationChannel } = await import('./redis-invalidation.js');
    channel = new RedisInvalidationChannel(config.redis);
  }
  const cache = new LinkCache({ ttlMs, maxEntries, ...(channel ? { channel } : {}) });
  return new CachingDriver(driver, cache, options.serveFromCache ?? true);
}
