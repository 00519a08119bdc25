import type { Logger } from 'pino';
import { createDriver, createRepositoryIndex } from '../../compose.js';
import type { Config } from '../../config/config.js';
import { RegistryStore } from '../../storage/registry-store.js';
import { CatalogIndex, parseIndexOptions } from './catalog-index.js';
import { RegistryBrowser } from './registry-browser.js';
import { RepositoryLocks } from './repository-locks.js';

/** The catalog services over the storage and Redis a config names, for commands run beside the server. */
async function openCatalog(config: Config, logger: Logger) {
  const driver = await createDriver(config);
  const index = await createRepositoryIndex(config);
  const store = new RegistryStore(driver);
  const catalog = new CatalogIndex(index, store, driver, logger, { ...parseIndexOptions(config.berth.raw), reconcileIntervalMs: 0 });
  const browser = new RegistryBrowser({
    store,
    driver,
    catalog,
    locks: new RepositoryLocks(),
    deleteEnabled: config.storage.deleteEnabled,
    readOnly: config.storage.readOnly,
    uploadSessionTtlMs: config.berth.uploadSessionTtlMs,
    logger,
  });
  return {
    catalog,
    browser,
    shared: config.redis !== undefined,
    close: async () => {
      await index.close();
      await driver.close();
    },
  };
}

/**
 * `berth repo rm NAME`: deletes a repository as `DELETE /api/v1/repositories/NAME` does (needs
 * `storage.delete.enabled`). With Redis the shared index forgets it at once; a server with an in-process index
 * drops it at its next reconciliation.
 */
export async function removeRepository(config: Config, name: string, logger: Logger): Promise<{ sharedIndex: boolean }> {
  const c = await openCatalog(config, logger);
  try {
    await c.browser.deleteRepository(name);
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
  const c = await openCatalog(config, logger);
  try {
    return await c.catalog.rebuild(options);
  } finally {
    await c.close();
  }
}
