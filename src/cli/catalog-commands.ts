/**
 * `berth repo rm NAME` and `berth index rebuild`: the command-line glue over the catalog services
 * (src/services/catalog), listed in the CLI's command table (main.ts).
 */
import { pino, type Logger } from 'pino';
import { composeNamespace, createDriver, createRepositoryIndex } from '../compose.js';
import { AuditLog, cliContext, createEvents, NO_EVENTS, parseAuditConfig } from '../events/index.js';
import { INERT_EVENT_METRICS } from '../events/metrics.js';
import { MemorySessionStore } from '../uploads/memory-session-store.js';
import { UploadService } from '../uploads/upload-service.js';
import { withLinkCache } from '../storage/link-cache.js';
import { loadConfig, type Config } from '../config/config.js';
import { RegistryError } from '../errors/registry-error.js';
import { createLogger } from '../logging.js';
import { CatalogIndex, parseIndexOptions } from '../services/catalog/catalog-index.js';
import { RegistryBrowser } from '../services/catalog/registry-browser.js';
import { RepositoryLocks } from '../services/catalog/repository-locks.js';
import { RegistryStore } from '../storage/registry-store.js';
import { CONFIG_OPTION, configFile, osUser, UsageError, type Command, type CommandArgs } from './command.js';

/**
 * The catalog services over the storage and Redis a config names, for commands run beside the server. Changes go
 * through the same domain as the server's (compose.ts: events, catalog index, locks): their events are queued in
 * the durable queue the config names (storage, or Redis) and delivered by a running server, as `berth gc`'s are.
 */
async function openCatalog(config: Config, logger: Logger, options: { events: boolean }) {
  // Changes are announced to running servers' link caches (through Redis when configured).
  const driver = await withLinkCache(await createDriver(config), config, { serveFromCache: false });
  const index = await createRepositoryIndex(config);
  const store = new RegistryStore(driver);
  const catalog = new CatalogIndex(index, store, driver, logger, { ...parseIndexOptions(config.berth.raw), reconcileIntervalMs: 0 });
  // Queue only: the server's delivery workers drain the queue (one deliverer per endpoint queue keeps the order).
  // (`berth index rebuild` changes nothing that gives events: it opens no queue.)
  const events = options.events
    ? await createEvents(config, {
        driver,
        logger,
        // Queued only, never delivered here: nothing to count (and no prom-client to load).
        metrics: INERT_EVENT_METRICS,
        deliver: false,
        listenAddr: '',
        // The audit line on stderr (and in `berth.audit.file`), as `berth user` writes it.
        audit: new AuditLog(
          pino({ base: {} }, process.stderr),
          parseAuditConfig(config.raw, () => undefined),
        ),
      })
    : null;
  // A command starts no uploads; the namespace needs an upload service all the same.
  const sessions = new MemorySessionStore({ ttlMs: config.berth.uploadSessionTtlMs });
  const locks = new RepositoryLocks();
  const uploads = new UploadService(driver, sessions, store);
  const namespace = composeNamespace({ config, store, uploads, events: events ?? NO_EVENTS, catalog, locks, logger });
  const browser = new RegistryBrowser({
    store,
    driver,
    catalog,
    namespace,
    deleteEnabled: config.storage.deleteEnabled,
    readOnly: config.storage.readOnly,
    logger,
  });
  return {
    catalog,
    browser,
    shared: config.redis !== undefined,
    close: async () => {
      await events?.close();
      await sessions.close();
      await index.close();
      await driver.close();
    },
  };
}

/**
 * `berth repo rm NAME`: deletes a repository as `DELETE /api/v1/repositories/NAME` does (needs
 * `storage.delete.enabled`), with the same `delete` event naming only the repository; its context says it came from
 * the command line (`cliContext`). With Redis the shared index forgets it at once; a server with an in-process index
 * drops it at its next reconciliation.
 */
export async function removeRepository(config: Config, name: string, logger: Logger): Promise<{ sharedIndex: boolean }> {
  const c = await openCatalog(config, logger, { events: true });
  try {
    await c.browser.deleteRepository(name, cliContext('repo rm', osUser()));
    return { sharedIndex: c.shared };
  } finally {
    await c.close();
  }
}

/**
 * `berth index rebuild`: walks storage and rewrites the catalog index in Redis (entries of repositories no longer in
 * storage go). Without Redis the index lives inside each server process, which builds it at startup: there is
 * nothing to rebuild from outside, and `null` is returned.
 */
export async function rebuildIndex(config: Config, logger: Logger, options: { clear?: boolean } = {}): Promise<number | null> {
  if (!config.redis) return null;
  const c = await openCatalog(config, logger, { events: false });
  try {
    return await c.catalog.rebuild(options);
  } finally {
    await c.close();
  }
}

async function open(args: CommandArgs) {
  const config = await loadConfig(configFile(args.values.config, undefined));
  const logger = createLogger({ ...config, log: { ...config.log, level: 'warn' } }, process.stderr);
  for (const w of config.warnings) logger.warn(w);
  return { config, logger };
}

/** `berth repo rm NAME`. */
export const repoCommand: Command = {
  summary: 'delete a repository: tags, manifests, layer links, uploads (its blobs go with the next gc)',
  usage: 'berth repo rm NAME [-c FILE]',
  options: { ...CONFIG_OPTION },
  maxPositionals: 2,
  async run(args) {
    const [action, name] = args.positionals;
    if (action !== 'rm' || !name) throw new UsageError('expected rm and a repository name');
    const { config, logger } = await open(args);
    try {
      const { sharedIndex } = await removeRepository(config, name, logger);
      process.stdout.write(`deleted repository ${name}; its blobs are reclaimed by the next berth gc\n`);
      if (!sharedIndex) process.stdout.write('(running servers without redis drop it from their catalog at their next index reconciliation)\n');
      return 0;
    } catch (err) {
      if (!(err instanceof RegistryError)) throw err;
      process.stderr.write(`berth repo rm: ${err.descriptor.code === 'NAME_UNKNOWN' ? `no repository ${name}` : err.message}\n`);
      return 1;
    }
  },
};

/** `berth index rebuild`. */
export const indexCommand: Command = {
  summary: 'rebuild the catalog index in Redis from storage',
  usage: 'berth index rebuild [-c FILE]',
  options: { ...CONFIG_OPTION },
  maxPositionals: 1,
  async run(args) {
    if (args.positionals[0] !== 'rebuild') throw new UsageError('expected rebuild');
    const { config, logger } = await open(args);
    const n = await rebuildIndex(config, logger);
    if (n === null) {
      process.stdout.write('no redis configured: each server keeps its catalog index in process and builds it at startup\n');
      return 0;
    }
    process.stdout.write(`catalog index rebuilt: ${n} repositories\n`);
    return 0;
  },
};
