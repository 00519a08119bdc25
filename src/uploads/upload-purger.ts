import type { Logger } from 'pino';
import { STALE_TEMPORARY_FILE_AGE_MS, type StorageDriver } from '../storage/driver.js';
import { RegistryStore } from '../storage/registry-store.js';
import { enumerateRepositories } from '../storage/repositories.js';
import { UploadDataStore } from '../storage/upload-data-store.js';
import type { UploadSessionStore } from './session-store.js';
import { removeUpload, staleUpload } from './stale-uploads.js';

/**
 * Removes abandoned uploads (registry:2's `storage.maintenance.uploadpurging`): every upload of every repository
 * (as the upload data store lists them) whose last activity (start, last write) is at least `ageMs` old -- the
 * stale-upload policy's age (stale-uploads.ts) -- session and data together. Returns the number of uploads
 * removed (or that would be, with `dryRun`). Temporary files that interrupted writes left anywhere in the storage
 * (older than {@link STALE_TEMPORARY_FILE_AGE_MS}) go too.
 */
export async function purgeUploads(
  driver: StorageDriver,
  sessions: UploadSessionStore | undefined,
  options: { ageMs: number; dryRun: boolean; now?: number; logger?: Logger },
): Promise<number> {
  const now = options.now ?? Date.now();
  const cutoff = now - options.ageMs;
  const policy = { ageMs: options.ageMs };
  // Where uploads live in storage is the upload data store's business.
  const data = new UploadDataStore(driver, new RegistryStore(driver));
  let removed = 0;
  for await (const repo of enumerateRepositories(driver)) {
    if (!repo.uploads) continue;
    for (const upload of await data.list(repo.name)) {
      if (!(await staleUpload(policy, driver, upload.dir, now))) continue;
      removed++;
      options.logger?.info({ repository: repo.name, upload: upload.id, dryRun: options.dryRun }, 'purging stale upload');
      if (!options.dryRun) await removeUpload(driver, sessions, upload.dir);
    }
  }
  if (!options.dryRun && driver.abortStaleUploads) {
    const aborted = await driver.abortStaleUploads(new Date(cutoff));
    if (aborted > 0) options.logger?.info({ aborted }, 'aborted stale multipart uploads');
  }
  if (driver.removeStaleTemporaryFiles) {
    const leftovers = await driver.removeStaleTemporaryFiles(new Date(now - STALE_TEMPORARY_FILE_AGE_MS), { dryRun: options.dryRun });
    if (leftovers.length > 0) options.logger?.info({ files: leftovers, dryRun: options.dryRun }, 'removed temporary files of interrupted writes');
  }
  return removed;
}
