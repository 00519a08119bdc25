import type { StorageDriver } from '../storage/driver.js';
import { isNotFound } from '../storage/driver.js';

/**
 * The outcome of the last garbage collection run, kept in storage so that whoever ran it (`berth gc` from the
 * command line, or a server's schedule) the servers' metrics can show it: `/_berth/gc-last.json` beside registry:2's
 * `/docker` tree (registry:2 and the repository walk never look there).
 */
export const GC_LAST_RUN_PATH = '/_berth/gc-last.json';

/** What {@link GC_LAST_RUN_PATH} holds. */
export interface GcLastRun {
  /** When the run finished (ISO 8601). */
  finishedAt: string;
  /** Blob and upload bytes it freed. */
  bytesFreed: number;
  blobsDeleted: number;
  manifestsDeleted: number;
  durationMs: number;
  /** True when it was interrupted before it finished. */
  interrupted: boolean;
  /** `cli` (berth gc) or `server` (a schedule). */
  source: 'cli' | 'server';
}

/** Records a finished run (written atomically through the driver). */
export async function writeGcLastRun(driver: StorageDriver, run: GcLastRun): Promise<void> {
  await driver.putContent(GC_LAST_RUN_PATH, Buffer.from(`${JSON.stringify(run)}\n`));
}

/** The last recorded run, or null when none was recorded (or the file is not one berth wrote). */
export async function readGcLastRun(driver: StorageDriver): Promise<GcLastRun | null> {
  let text: string;
  try {
    text = (await driver.getContent(GC_LAST_RUN_PATH)).toString('utf8');
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
  try {
    const run = JSON.parse(text) as Partial<GcLastRun>;
    if (typeof run.finishedAt !== 'string' || typeof run.bytesFreed !== 'number' || Number.isNaN(Date.parse(run.finishedAt))) return null;
    return run as GcLastRun;
  } catch {
    return null;
  }
}
