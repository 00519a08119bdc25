/**
 * The `berth gc`, `berth du` and `berth fsck` commands (registered in the CLI's command table on import).
 */
import type { Logger } from 'pino';
import { createDriver } from '../compose.js';
import { staleUploadPolicy } from '../uploads/stale-uploads.js';
import { loadConfig, type Config } from '../config/config.js';
import { parseDuration } from '../config/duration.js';
import { commands } from '../cli/command-registry.js';
import { configPath } from '../cli/serve.js';
import { createLogger } from '../logging.js';
import type { StorageDriver } from '../storage/driver.js';
import { DEFAULT_GRACE_MS, runGc, type GcDeletion, type GcOptions } from './collector.js';
import { fsck, type FsckProblem } from './fsck.js';
import { createProgress, formatBytes } from './progress.js';
import { diskUsage, formatUsage } from './usage.js';

/** A command line error: printed with the usage, exit status 2. */
class UsageError extends Error {}

/** Parsed arguments: the optional config file, boolean flags and flags with a value (`--grace 2h`, `--grace=2h`). */
interface ParsedArgs {
  file?: string;
  flags: Set<string>;
  values: Map<string, string>;
}

/** Parses `args` allowing only the given flags. */
export function parseArgs(args: string[], booleans: string[], withValue: string[]): ParsedArgs {
  const out: ParsedArgs = { flags: new Set(), values: new Map() };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (!arg.startsWith('-')) {
      if (out.file !== undefined) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
      out.file = arg;
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (booleans.includes(name) && eq < 0) {
      out.flags.add(name);
    } else if (withValue.includes(name)) {
      const value = eq > 0 ? arg.slice(eq + 1) : args[++i];
      if (value === undefined) throw new UsageError(`${name} needs a value`);
      out.values.set(name, value);
    } else {
      throw new UsageError(`unknown option ${name}`);
    }
  }
  return out;
}

function durationArg(parsed: ParsedArgs, name: string, fallback: number): number {
  const raw = parsed.values.get(name);
  if (raw === undefined) return fallback;
  const ms = parseDuration(raw);
  if (ms === null) throw new UsageError(`${name}: expected a duration such as 30m, 2h or 0, got ${JSON.stringify(raw)}`);
  return ms;
}

/** Loads the config (argument, else BERTH_CONFIG / REGISTRY_CONFIGURATION_PATH) and opens its storage. */
async function open(parsed: ParsedArgs): Promise<{ config: Config; driver: StorageDriver; logger: Logger }> {
  const env = { ...process.env };
  const file = configPath(parsed.file ? [parsed.file] : [], env);
  delete env.REGISTRY_CONFIGURATION_PATH;
  const config = await loadConfig(file, env);
  // On a terminal the progress bar and the printed lines say it all; elsewhere (cron, containers) log at the
  // configured level, progress included.
  const logger = createLogger(process.stderr.isTTY ? { ...config, log: { ...config.log, level: 'warn' } } : config, process.stderr);
  for (const w of config.warnings) logger.warn(w);
  return { config, driver: await createDriver(config), logger };
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

async function withUsage(usage: string, fn: () => Promise<number>): Promise<number> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`berth: ${err.message}\nusage: ${usage}\n`);
    return 2;
  }
}

function describeDeletion(d: GcDeletion, dryRun: boolean): string {
  const verb = dryRun ? 'would delete' : 'deleted';
  if (d.kind === 'manifest') return `${verb} manifest ${d.repository}@${d.digest}`;
  if (d.kind === 'upload') return `${verb} upload ${d.repository}/_uploads/${d.upload} (${formatBytes(d.bytes)})`;
  const links = d.links && d.links.length > 0 ? `, linked in ${d.links.join(', ')}` : '';
  return `${verb} blob ${d.digest} (${formatBytes(d.bytes)}${links})`;
}

const GC_USAGE = 'berth gc [config.yml] [--dry-run] [--delete-untagged] [--grace 1h]   delete unreferenced blobs (safe while serving)';
const DU_USAGE = 'berth du [config.yml] [--json] [--grace 1h]   storage used per repository, and what gc would reclaim';
const FSCK_USAGE = 'berth fsck [config.yml] [--repair] [--json]   verify blob digests, links and manifest references';

commands.set('gc', {
  usage: GC_USAGE,
  run: (args) =>
    withUsage(GC_USAGE, async () => {
      const parsed = parseArgs(args, ['--dry-run', '--delete-untagged'], ['--grace', '--upload-age']);
      const graceMs = durationArg(parsed, '--grace', DEFAULT_GRACE_MS);
      const { config, driver, logger } = await open(parsed);
      if (graceMs === 0) process.stderr.write('berth gc: --grace 0 is only safe while nothing pushes to the registry\n');
      const dryRun = parsed.flags.has('--dry-run');
      const interrupt = interruptSignal('berth gc');
      try {
        const options: GcOptions = {
          dryRun,
          deleteUntagged: parsed.flags.has('--delete-untagged'),
          graceMs,
          uploadAgeMs: staleUploadPolicy(Math.max(graceMs, config.berth.uploadSessionTtlMs), durationArg(parsed, '--upload-age', 0)).ageMs,
          signal: interrupt.signal,
          logger,
          progress: createProgress(process.stderr, logger),
          onDeletion: (d) => process.stdout.write(`${describeDeletion(d, dryRun)}\n`),
        };
        const r = await runGc(driver, options);
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
});

commands.set('du', {
  usage: DU_USAGE,
  run: (args) =>
    withUsage(DU_USAGE, async () => {
      const parsed = parseArgs(args, ['--json'], ['--grace']);
      const graceMs = durationArg(parsed, '--grace', DEFAULT_GRACE_MS);
      const { config, driver, logger } = await open(parsed);
      try {
        const report = await diskUsage(driver, {
          graceMs,
          uploadAgeMs: staleUploadPolicy(Math.max(graceMs, config.berth.uploadSessionTtlMs)).ageMs,
          progress: createProgress(process.stderr, logger),
        });
        process.stdout.write(parsed.flags.has('--json') ? `${JSON.stringify(report, null, 2)}\n` : formatUsage(report));
        return 0;
      } finally {
        await driver.close();
      }
    }),
});

function describeProblem(p: FsckProblem): string {
  const where = p.repository ? `${p.repository}: ` : '';
  const q = p.quarantined ? ' [quarantined]' : '';
  if (p.kind === 'corrupt-blob') return `corrupt blob ${p.digest}: ${p.detail}${q}`;
  return `${p.kind.replace(/-/g, ' ')}: ${where}${p.detail}${p.path && p.kind !== 'manifest-missing-blob' ? ` (${p.path})` : ''}`;
}

commands.set('fsck', {
  usage: FSCK_USAGE,
  run: (args) =>
    withUsage(FSCK_USAGE, async () => {
      const parsed = parseArgs(args, ['--repair', '--json'], []);
      const { driver, logger } = await open(parsed);
      const interrupt = interruptSignal('berth fsck');
      try {
        const r = await fsck(driver, {
          repair: parsed.flags.has('--repair'),
          signal: interrupt.signal,
          logger,
          progress: createProgress(process.stderr, logger),
        });
        if (parsed.flags.has('--json')) {
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
});
