/**
 * `berth mirror pull IMAGE...`: fetches images into the pull-through cache ahead of need (warm-up for slow sites),
 * through the same cache the server runs, writing into the config's storage.
 */
import { createDriver, createFillCoordinator } from '../compose.js';
import { loadConfig } from '../config/config.js';
import { createLogger } from '../logging.js';
import { formatBytes } from '../gc/progress.js';
import { parseWarmImage, parseWarmPlatform, warmUp, type WarmEvent, type WarmImage, type WarmPlatform } from '../proxy/warm-up.js';
import { LocalNamespace } from '../registry/local.js';
import { RegistryStore } from '../storage/registry-store.js';
import { MemorySessionStore } from '../uploads/memory-session-store.js';
import { UploadService } from '../uploads/upload-service.js';
import { CONFIG_OPTION, configFile, UsageError, type Command } from './command.js';

function describe(e: WarmEvent): string {
  switch (e.kind) {
    case 'image':
      return `${e.image}: ${e.digest}`;
    case 'manifest':
      return `${e.image}: manifest ${e.digest}${e.platform ? ` (${e.platform})` : ''}`;
    case 'skipped':
      return `${e.image}: skipped ${e.digest}${e.platform ? ` (${e.platform})` : ''}`;
    case 'planned':
      return `${e.image}: ${e.blobs} blobs to fetch (${formatBytes(e.bytes)})`;
    case 'blob':
      return `${e.image}: blob ${e.digest} (${formatBytes(e.bytes)})`;
    case 'failed':
      return `${e.image}: failed: ${e.error}`;
  }
}

/** `berth mirror`. */
export const mirrorCommand: Command = {
  summary: 'warm the pull-through cache: berth mirror pull IMAGE...',
  usage: 'berth mirror pull [-c FILE] [--platform os/arch] IMAGE...',
  details: `IMAGE is name[:tag|@digest], optionally with the registry host it comes from (docker.io/library/ubuntu:24.04,
ghcr.io/org/app:1, ubuntu): the host selects the upstream as containerd's ?ns= does. Every platform of an index is
fetched unless --platform is given. Content already cached costs no upstream transfer. The exit status is 1 when
an image could not be fetched.`,
  options: {
    ...CONFIG_OPTION,
    platform: { type: 'string', value: 'OS/ARCH', description: 'only this platform of multi-platform images (e.g. linux/amd64)' },
  },
  maxPositionals: 10_000,
  async run(args) {
    const [sub, ...rest] = args.positionals;
    if (sub !== 'pull') throw new UsageError(sub === undefined ? 'expected a subcommand: pull' : `unknown subcommand ${JSON.stringify(sub)}`);
    if (rest.length === 0) throw new UsageError('expected at least one IMAGE');
    let images: WarmImage[];
    let platform: WarmPlatform | undefined;
    try {
      images = rest.map(parseWarmImage);
      if (typeof args.values.platform === 'string') platform = parseWarmPlatform(args.values.platform);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const config = await loadConfig(configFile(args.values.config, undefined));
    const logger = createLogger({ ...config, log: { ...config.log, level: process.stderr.isTTY ? 'warn' : config.log.level } }, process.stderr);
    for (const w of config.warnings) logger.warn(w);
    const driver = await createDriver(config);
    const store = new RegistryStore(driver);
    // With Redis, a warm-up joins the replicas' fills instead of fetching a blob one of them is fetching already.
    const coordinator = await createFillCoordinator(config);
    // The pull-through cache is loaded by this command only (the CLI imports every command's module at start).
    const { createPullThrough } = await import('../proxy/index.js');
    const pullThrough = createPullThrough(config, { store, driver, logger, coordinator });
    if (!pullThrough) {
      await coordinator.close();
      await driver.close();
      process.stderr.write('berth mirror: the config has no proxy section: nothing to pull through\n');
      return 1;
    }
    const sessions = new MemorySessionStore({ ttlMs: config.berth.uploadSessionTtlMs });
    const uploads = new UploadService(driver, sessions, store);
    const local = new LocalNamespace(store, uploads, { automaticCrossMount: false });
    try {
      const r = await warmUp(pullThrough.decorate(local), images, {
        ...(platform ? { platform } : {}),
        onEvent: (e) => process.stdout.write(`${describe(e)}\n`),
      });
      process.stdout.write(
        `mirror pull: ${r.images} of ${images.length} images, ${r.manifests} manifests, ${r.blobs} blobs (${formatBytes(r.bytes)})${r.failed ? `; ${r.failed} failed` : ''}\n`,
      );
      return r.failed > 0 ? 1 : 0;
    } finally {
      await pullThrough.close();
      await uploads.settle();
      await sessions.close();
      await driver.close();
    }
  },
};
