import type { EventSink } from '../events/registry-events.js';
import type { Logger } from 'pino';
import { bool, checkKeys, duration, section, type RawSection } from '../config/fields.js';
import type { StorageDriver } from '../storage/driver.js';
import type { UploadSessionStore } from '../uploads/session-store.js';
import { DEFAULT_GRACE_MS, runGc, type GcResult } from './collector.js';

/** Options of the scheduled gc (`berth.gc` in the config). */
export interface GcScheduleOptions {
  /** Time between runs; the first run starts one interval after the server starts. */
  intervalMs: number;
  graceMs: number;
  deleteUntagged: boolean;
  /** Minimum age of abandoned upload data that is deleted (see `GcOptions.uploadAgeMs`). */
  uploadAgeMs?: number;
  /** Called after every run (e.g. to update metrics: bytes reclaimed, last run time). */
  onResult?: (result: GcResult) => void;
  /** Where the deletions go as events (webhooks, audit trail). */
  events?: EventSink;
}

/**
 * Reads `berth.gc` (`{interval: 24h, grace: 1h, deleteuntagged: false}`) from `config.berth.raw`; null when the
 * section is absent or `interval` is 0 (no schedule). Warnings about unknown keys go to `warn`.
 */
export function parseGcSchedule(berthRaw: RawSection, warn: (msg: string) => void = () => {}): GcScheduleOptions | null {
  if (berthRaw.gc === undefined || berthRaw.gc === null) return null;
  const gc = section(berthRaw, 'gc', 'berth.');
  checkKeys(gc, 'berth.gc.', ['interval', 'grace', 'deleteuntagged', 'uploadage'], warn);
  const intervalMs = duration(gc, 'interval', 'berth.gc.', 24 * 3_600_000);
  if (intervalMs <= 0) return null;
  const options: GcScheduleOptions = {
    intervalMs,
    graceMs: duration(gc, 'grace', 'berth.gc.', DEFAULT_GRACE_MS),
    deleteUntagged: bool(gc, 'deleteuntagged', 'berth.gc.', false),
  };
  if (gc.uploadage !== undefined) options.uploadAgeMs = duration(gc, 'uploadage', 'berth.gc.', 0);
  if (options.graceMs < 60_000) warn('berth.gc.grace: under a minute is unsafe while the registry serves pushes');
  return options;
}

/** A running schedule. */
export interface GcSchedule {
  /** Stops the timer and asks a running gc to stop between deletions. */
  stop(): void;
  /** The last completed run, if any. */
  lastResult(): GcResult | undefined;
}

/**
 * Runs gc every `intervalMs` inside the server (online: see collector.ts for why that is safe). Runs never
 * overlap; a failed run is logged and the schedule continues.
 */
export function startGcSchedule(driver: StorageDriver, options: GcScheduleOptions, logger: Logger, sessions?: UploadSessionStore): GcSchedule {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let last: GcResult | undefined;
  const controller = new AbortController();
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => void tick(), options.intervalMs);
    timer.unref();
  };
  const tick = async () => {
    try {
      const gcOptions: Parameters<typeof runGc>[1] = {
        graceMs: options.graceMs,
        deleteUntagged: options.deleteUntagged,
        signal: controller.signal,
        logger,
        ...(sessions ? { sessions } : {}),
      };
      if (options.uploadAgeMs !== undefined) gcOptions.uploadAgeMs = options.uploadAgeMs;
      if (options.events) gcOptions.events = options.events;
      last = await runGc(driver, gcOptions);
      options.onResult?.(last);
    } catch (err) {
      logger.error({ err }, 'gc: scheduled run failed');
    }
    schedule();
  };
  schedule();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      controller.abort();
    },
    lastResult: () => last,
  };
}
