import type { Logger } from 'pino';
import { isNotFound, type StorageDriver } from '../storage/driver.js';
import { basename, paths } from '../storage/paths.js';
import type { UploadSessionStore } from './session-store.js';
import { removeUpload, staleUpload } from './stale-uploads.js';

/**
 * Removes abandoned uploads (registry:2's `storage.maintenance.uploadpurging`): every
 * `repositories/<name>/_uploads/<id>` whose last activity (start, last write) is at least `ageMs` old -- the
 * stale-upload policy's age (stale-uploads.ts) -- session and data together. Returns the number of uploads
 * removed (or that would be, with `dryRun`).
 */
export async function purgeUploads(
  driver: StorageDriver,
  sessions: UploadSessionStore | undefined,
  options: { ageMs: number; dryRun: boolean; now?: number; logger?: Logger },
): Promise<number> {
  const now = options.now ?? Date.now();
  const cutoff = now - options.ageMs;
  const policy = { ageMs: options.ageMs };
  let removed = 0;
  const visit = async (dir: string): Promise<void> => {
    let children: string[];
    try {
      children = await driver.list(dir);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    for (const child of children) {
      const name = basename(child);
      if (name === '_uploads') {
        for (const upload of await driver.list(child).catch(() => [] as string[])) {
          if (await staleUpload(policy, driver, upload, now)) {
            removed++;
            options.logger?.info({ upload: upload.slice(paths.repositoriesRoot.length + 1), dryRun: options.dryRun }, 'purging stale upload');
            if (!options.dryRun) {
              await removeUpload(driver, sessions, upload);
            }
          }
        }
      } else if (!name.startsWith('_')) {
        const info = await driver.stat(child).catch(() => null);
        if (info?.isDir) await visit(child);
      }
    }
  };
  await visit(paths.repositoriesRoot);
  if (!options.dryRun && driver.abortStaleUploads) {
    const aborted = await driver.abortStaleUploads(new Date(cutoff));
    if (aborted > 0) options.logger?.info({ aborted }, 'aborted stale multipart uploads');
  }
  return removed;
}
