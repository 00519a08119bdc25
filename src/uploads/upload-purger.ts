import type { Logger } from 'pino';
import { isNotFound, type StorageDriver } from '../storage/driver.js';
import { basename, paths } from '../storage/paths.js';
import type { UploadSessionStore } from './session-store.js';

/**
 * Removes upload data older than `ageMs` (registry:2's `storage.maintenance.uploadpurging`): every
 * `repositories/<name>/_uploads/<id>` whose `startedat` is older, or unreadable and whose directory is older.
 * Returns the number of uploads removed (or that would be, with `dryRun`).
 */
export async function purgeUploads(
  driver: StorageDriver,
  sessions: UploadSessionStore | undefined,
  options: { ageMs: number; dryRun: boolean; now?: number; logger?: Logger },
): Promise<number> {
  const cutoff = (options.now ?? Date.now()) - options.ageMs;
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
          if (await isStale(driver, upload, cutoff)) {
            removed++;
            options.logger?.info({ upload: upload.slice(paths.repositoriesRoot.length + 1), dryRun: options.dryRun }, 'purging stale upload');
            if (!options.dryRun) {
              await driver.delete(upload).catch((err: unknown) => {
                if (!isNotFound(err)) throw err;
              });
              await sessions?.delete(basename(upload));
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

async function isStale(driver: StorageDriver, uploadDir: string, cutoff: number): Promise<boolean> {
  try {
    const started = Date.parse((await driver.getContent(`${uploadDir}/startedat`)).toString('utf8').trim());
    if (Number.isFinite(started)) return started < cutoff;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  const info = await driver.stat(uploadDir).catch(() => null);
  return info !== null && info.modTime.getTime() < cutoff;
}
