import type { Logger } from 'pino';
import type { Config } from './config/config.js';
import type { HistogramInstrument } from './metrics/instruments.js';
import { EventingNamespace } from './events/eventing-namespace.js';
import type { EventSink } from './events/registry-events.js';
import type { PullThrough } from './proxy/pull-through.js';
import { LocalNamespace } from './registry/local.js';
import type { Namespace } from './registry/repository.js';
import type { CatalogIndex } from './services/catalog/catalog-index.js';
import { IndexingNamespace } from './services/catalog/indexing-namespace.js';
import type { RepositoryLocks } from './services/catalog/repository-locks.js';
import type { RegistryStore } from './storage/registry-store.js';
import type { UploadService } from './uploads/upload-service.js';
import type { StorageDriver } from './storage/driver.js';
import { FilesystemDriver } from './storage/drivers/filesystem.js';
import { TimedDriver, type StorageAction } from './storage/timed-driver.js';
import { MemorySessionStore } from './uploads/memory-session-store.js';
import type { UploadSessionStore } from './uploads/session-store.js';
import { MemoryRepositoryIndex, type RepositoryIndex } from './services/catalog/repository-index.js';
import { LocalFillCoordinator, type FillCoordinator } from './proxy/fill-coordinator.js';

/**
 * The parts that the server and the commands (gc, du, fsck, repo rm) build alike from the typed config. Kept apart
 * from app.ts so no command or service has to import the HTTP application to get a storage driver.
 */

/**
 * The storage driver the config selects. `warn` hears of what the driver gives up on at runtime (the file system
 * refusing direct writes).
 */
export async function createDriver(config: Config, warn: (msg: string) => void = () => undefined): Promise<StorageDriver> {
  if (config.storage.driver === 's3') {
    // storage.s3 was parsed with the rest of the config (its errors and warnings came at load time).
    const { S3Driver } = await import('./storage/drivers/s3.js');
    if (!config.storage.s3) throw new Error('storage.s3: missing from the parsed config');
    return new S3Driver(config.storage.s3);
  }
  return new FilesystemDriver({
    rootDirectory: config.storage.filesystem.rootDirectory,
    directWrites: config.storage.filesystem.directWrites,
    onDirectWritesRefused: (err) =>
      warn(
        `storage.filesystem.directwrites: the file system refused O_DIRECT (${(err as { code?: string }).code ?? (err as Error).message}); ` +
          'blob data is written through the page cache from now on',
      ),
  });
}

/** registry:2's names for berth's drivers in the `driver` label (its S3 driver is `s3aws`). */
const REGISTRY2_DRIVER_NAMES: Readonly<Record<string, string>> = { filesystem: 'filesystem', s3: 's3aws' };

/**
 * `driver` with each call timed into `histogram` (registry:2's `registry_storage_action_seconds{action,driver}`,
 * the driver named as registry:2 names it). The server puts it in front of the driver when metrics are on; each
 * action's labelled child is looked up once, so a call costs two clock readings and one observation.
 */
export function withStorageTiming(driver: StorageDriver, histogram: HistogramInstrument<'action' | 'driver'>): StorageDriver {
  const driverLabel = REGISTRY2_DRIVER_NAMES[driver.name] ?? driver.name;
  const children = new Map<StorageAction, { observe(seconds: number): void }>();
  return new TimedDriver(driver, (action, seconds) => {
    let child = children.get(action);
    if (!child) {
      child = histogram.labels({ action, driver: driverLabel });
      children.set(action, child);
    }
    child.observe(seconds);
  });
}

/** The upload session store the config selects: Redis when `redis.addr` is set, else in-process. */
export async function createSessionStore(config: Config): Promise<UploadSessionStore> {
  const ttlMs = config.berth.uploadSessionTtlMs;
  if (config.redis) {
    // Loaded only when configured: a single-node registry never pays for the Redis client.
    const { RedisSessionStore } = await import('./uploads/redis-session-store.js');
    return RedisSessionStore.connect({ ...config.redis, ttlMs });
  }
  return new MemorySessionStore({ ttlMs });
}

/** The catalog index store the config selects: Redis when `redis.addr` is set (shared by replicas), else in-process. */
export async function createRepositoryIndex(config: Config): Promise<RepositoryIndex> {
  if (config.redis) {
    // Loaded only when configured, as the session store.
    const { RedisRepositoryIndex } = await import('./services/catalog/redis-repository-index.js');
    return RedisRepositoryIndex.connect(config.redis);
  }
  return new MemoryRepositoryIndex();
}

/**
 * Who fetches a blob the pull-through cache does not have yet: with Redis (`redis.addr`) one replica across all
 * sharing the storage, the others following its fill through storage; without, each process on its own.
 */
export async function createFillCoordinator(config: Config): Promise<FillCoordinator> {
  if (config.redis) {
    // Loaded only when configured, as the session store.
    const [{ Redis }, { redisClientOptions }, { RedisFillCoordinator }] = await Promise.all([
      import('ioredis'),
      import('./config/redis-addr.js'),
      import('./proxy/fill-coordinator.js'),
    ]);
    const redis = new Redis(redisClientOptions(config.redis));
    // Failures show as failed lease commands (the fill then goes ahead without a lease); nothing to print here.
    redis.on('error', () => undefined);
    return new RedisFillCoordinator(redis, { keyPrefix: config.redis.keyPrefix });
  }
  return new LocalFillCoordinator();
}

/** What {@link composeNamespace} puts together. */
export interface NamespaceParts {
  config: Config;
  store: RegistryStore;
  uploads: UploadService;
  /** The mirror (`proxy`), when configured. */
  pullThrough?: Pick<PullThrough, 'decorate'> | null;
  events: EventSink;
  catalog: CatalogIndex;
  locks: RepositoryLocks;
  logger: Logger;
}

/**
 * The repositories in storage, through the pull-through cache when one is configured: the innermost layers of
 * {@link composeNamespace}, and what the mirror's warm-up jobs read through (no events: no client pulled anything).
 */
export function mirroredNamespace(parts: Pick<NamespaceParts, 'config' | 'store' | 'uploads' | 'pullThrough'>): Namespace {
  const local = new LocalNamespace(parts.store, parts.uploads, { automaticCrossMount: parts.config.berth.automaticCrossMount });
  return parts.pullThrough ? parts.pullThrough.decorate(local) : local;
}

/**
 * The domain as the `/v2/` routes, the JSON API and `berth repo rm` use it, one decorator per concern around the
 * repositories in storage: the pull-through cache (src/proxy), events (src/events; outside the mirror, so pulls it
 * serves give their events too), and outermost the catalog index and the per-repository locks
 * (src/services/catalog/indexing-namespace.ts; the locks cover the events a write queues).
 */
export function composeNamespace(parts: NamespaceParts): Namespace {
  const { config } = parts;
  const evented = new EventingNamespace(mirroredNamespace(parts), parts.events);
  return new IndexingNamespace(evented, {
    catalog: parts.catalog,
    locks: parts.locks,
    store: parts.store,
    uploadSessionTtlMs: config.berth.uploadSessionTtlMs,
    logger: parts.logger,
  });
}
