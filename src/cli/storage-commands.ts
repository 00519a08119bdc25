/**
 * `berth gc`, `berth du` and `berth fsck`: the command-line glue over the storage services (gc, disk usage, fsck).
 */
import { stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { createDriver } from '../compose.js';
import { withLinkCache } from '../storage/link-cache.js';
import { staleUploadPolicy } from '../uploads/stale-uploads.js';
import { loadConfig, type Config } from '../config/config.js';
import { parseDuration } from '../config/duration.js';
import { createLogger } from '../logging.js';
import type { StorageDriver } from '../storage/driver.js';
import { DEFAULT_GRACE_MS, runGc, type GcDeletion, type GcOptions } from '../gc/collector.js';
import { fsck, type FsckProblem } from '../gc/fsck.js';
import { createProgress, formatBytes } from '../gc/progress.js';
import { diskUsage, formatUsage } from '../gc/usage.js';
import { CONFIG_OPTION, configFile, UsageError, type Command, type CommandArgs } from './command.js';

/** A command that cannot run on this storage: printed, exit status 1. */
class StorageRootError extends Error {}

function durationArg(args: CommandArgs, name: string, fallback: number): number {
  const raw = args.values[name];
  if (typeof raw !== 'string') return fallback;
  const ms = parseDuration(raw);
  if (ms === null) throw new UsageError(`--${name}: expected a duration such as 30m, 2h or 0, got ${JSON.stringify(raw)}`);
  return ms;
}

/**
 * Loads the config (see {@link configFile}), prints its warnings and opens its storage. A filesystem root that does
 * not exist is an error (a typo would otherwise report an empty registry, or create the directory); an empty one is
 * fine.
 */
async function open(args: CommandArgs): Promise<{ config: Config; driver: StorageDriver; logger: Logger }> {
  const config = await loadConfig(configFile(args.values.config, args.positionals[0]));
  // On a terminal the progress bar and the printed lines say it all; elsewhere (cron, containers) log at the
  // configured level, progress included.
  const logger = createLogger(process.stderr.isTTY ? { ...config, log: { ...config.log, level: 'warn' } } : config, process.stderr);
  for (const w of config.warnings) logger.warn(w);
  if (config.storage.driver === 'filesystem') {
    const root = config.storage.filesystem.rootDirectory;
    const info = await stat(root).catch(() => null);
    if (!info) throw new StorageRootError(`storage root ${root} does not exist (storage.filesystem.rootdirectory)`);
    if (!info.isDirectory()) throw new StorageRootError(`storage root ${root} is not a directory (storage.filesystem.rootdirectory)`);
  }
  // Reads straight from storage, but changes are announced to running servers (through Redis when configured), so
  // none of them keeps serving from its link cache what this command deleted.
  const driver = await withLinkCache(await createDriver(config), config, { serveFromCache: false });
  return { config, driver, logger };
}

/** Runs a storage command, turning a missing storage root into exit status 1 with a message. */
async function withStorage(name: string, fn: () => Promise<number>): Promise<number> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof StorageRootError)) throw err;
    process.stderr.write(`berth ${name}: ${err.message}\n`);
    return 1;
  }
}

/** An AbortSignal fired by the first SIGINT/SIGTERM; a second one exits at once. */
function interruptSignal(what: string): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSignal = () => {
    if (controller.signal.aborted) process.exit(130);
    process.stderr.write(`\n${what}: interrupted, stopping safely (interrupt again to exit at once)\n`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

function describeDeletion(d: GcDeletion, dryRun: boolean): string {
  const verb = dryRun ? 'would delete' : 'deleted';
  if (d.kind === 'manifest') return `${verb} manifest ${d.repository}@${d.digest}`;
  if (d.kind === 'upload') return `${verb} upload ${d.repository}/_uploads/${d.upload} (${formatBytes(d.bytes)})`;
  const links = d.links && d.links.length > 0 ? `, linked in ${d.links.join(', ')}` : '';
  return `${verb} blob ${d.digest} (${formatBytes(d.bytes)}${links})`;
}

/** `berth gc`. */
export const gcCommand: Command = {
  summary: 'delete unreferenced blobs (safe while the registry serves)',
  usage: 'berth gc [FILE | -c FILE] [--dry-run] [--delete-untagged] [--grace 1h] [--upload-age 24h]',
  options: {
    ...CONFIG_OPTION,
    'dry-run': { type: 'boolean', description: 'only print what would be deleted' },
    'delete-untagged': { type: 'boolean', description: 'also delete manifests no tag reaches (keeping index children and referrers)' },
    grace: { type: 'string', value: 'DURATION', description: 'never delete blobs touched more recently (default 1h; 0 only when nothing pushes)' },
    'upload-age': {
      type: 'string',
      value: 'DURATION',
      description: 'delete abandoned upload data older than this (default: berth.uploadsessionttl)',
    },
  },
  maxPositionals: 1,
  run: (args) =>
    withStorage('gc', async () => {
      const graceMs = durationArg(args, 'grace', DEFAULT_GRACE_MS);
      const { config, driver, logger } = await open(args);
      if (graceMs === 0) process.stderr.write('berth gc: --grace 0 is only safe while nothing pushes to the registry\n');
      const dryRun = args.values['dry-run'] === true;
      const interrupt = interruptSignal('berth gc');
      try {
        const options: GcOptions = {
          dryRun,
          source: 'cli',
          deleteUntagged: args.values['delete-untagged'] === true,
          graceMs,
          uploadAgeMs: staleUploadPolicy(Math.max(graceMs, config.berth.uploadSessionTtlMs), durationArg(args, 'upload-age', 0)).ageMs,
          signal: interrupt.signal,
          logger,
          progress: createProgress(process.stderr, logger),
          onDeletion: (d) => process.stdout.write(`${describeDeletion(d, dryRun)}\n`),
        };
        // Deletions are queued as events for the running server to deliver (this command only queues them).
        const { createEvents } = await import('../events/index.js');
        const { INERT_EVENT_METRICS } = await import('../events/metrics.js');
        const events = await createEvents(config, { driver, logger, metrics: INERT_EVENT_METRICS, deliver: false });
        options.events = events;
        let r: Awaited<ReturnType<typeof runGc>>;
        try {
          r = await runGc(driver, options);
        } finally {
          await events.close();
        }
        const n = (count: number, word: string) => `${count} ${word}${count === 1 ? '' : 's'}`;
        process.stdout.write(
          `${dryRun ? 'gc dry run: would delete' : 'gc: deleted'} ${n(r.manifestsDeleted, 'untagged manifest')}, ` +
            `${n(r.blobsDeleted, 'blob')} (${formatBytes(r.blobBytesReclaimed)}), ${n(r.uploadsDeleted, 'upload')} ` +
            `(${formatBytes(r.uploadBytesReclaimed)}); ${formatBytes(r.bytesReclaimed)} ${dryRun ? 'reclaimable' : 'reclaimed'}; ` +
            `${n(r.blobsProtected, 'young blob')} kept for the grace period; ${(r.durationMs / 1000).toFixed(1)}s` +
            `${r.interrupted ? ' (interrupted)' : ''}\n`,
        );
        return r.interrupted ? 130 : 0;
      } finally {
        interrupt.dispose();
        await driver.close();
      }
    }),
};

/** `berth du`. */
export const duCommand: Command = {
  summary: 'storage used per repository, and what gc would reclaim',
  usage: 'berth du [FILE | -c FILE] [--json] [--grace 1h]',
  options: {
    ...CONFIG_OPTION,
    json: { type: 'boolean', description: 'print the report as JSON' },
    grace: { type: 'string', value: 'DURATION', description: 'as for berth gc (default 1h)' },
  },
  maxPositionals: 1,
  run: (args) =>
    withStorage('du', async () => {
      const graceMs = durationArg(args, 'grace', DEFAULT_GRACE_MS);
      const { config, driver, logger } = await open(args);
      try {
        const report = await diskUsage(driver, {
          graceMs,
          uploadAgeMs: staleUploadPolicy(Math.max(graceMs, config.berth.uploadSessionTtlMs)).ageMs,
          progress: createProgress(process.stderr, logger),
        });
        process.stdout.write(args.values.json === true ? `${JSON.stringify(report, null, 2)}\n` : formatUsage(report));
        return 0;
      } finally {
        await driver.close();
      }
    }),
};

function describeProblem(p: FsckProblem): string {
  const where = p.repository ? `${p.repository}: ` : '';
  const q = p.quarantined ? ' [quarantined]' : p.removed ? ' [removed]' : '';
  if (p.kind === 'corrupt-blob') return `corrupt blob ${p.digest}: ${p.detail}${q}`;
  return `${p.kind.replace(/-/g, ' ')}: ${where}${p.detail}${p.path && p.kind !== 'manifest-missing-blob' ? ` (${p.path})` : ''}${q}`;
}

/** `berth fsck`. */
export const fsckCommand: Command = {
  summary: 'verify blob digests, links and manifest references',
  usage: 'berth fsck [FILE | -c FILE] [--repair] [--json]',
  details: 'Exit status: 0 clean, 1 problems found (or the storage root does not exist), 2 usage error.',
  options: {
    ...CONFIG_OPTION,
    repair: { type: 'boolean', description: 'quarantine corrupt blobs, remove the links that then dangle and what interrupted writes left' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  maxPositionals: 1,
  run: (args) =>
    withStorage('fsck', async () => {
      const { driver, logger } = await open(args);
      const interrupt = interruptSignal('berth fsck');
      try {
        const r = await fsck(driver, {
          repair: args.values.repair === true,
          signal: interrupt.signal,
          logger,
          progress: createProgress(process.stderr, logger),
        });
        if (args.values.json === true) {
          process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        } else {
          for (const p of r.problems) process.stdout.write(`${describeProblem(p)}\n`);
          process.stdout.write(
            `fsck: ${r.blobsChecked} blobs (${formatBytes(r.bytesHashed)}) re-hashed, ${r.manifestsChecked} manifests in ` +
              `${r.repositories} repositories checked; ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}` +
              `${r.quarantined > 0 ? `, ${r.quarantined} corrupt blob(s) quarantined` : ''}${r.interrupted ? ' (interrupted)' : ''}\n`,
          );
        }
        return r.interrupted ? 130 : r.problems.length > 0 ? 1 : 0;
      } finally {
        interrupt.dispose();
        await driver.close();
      }
    }),
};
