import type { StorageDriver } from './driver.js';
import { deleteIfPresent, listOrEmpty } from './driver-utils.js';
import { basename, paths } from './paths.js';

/** Attempts at removing a directory a concurrent writer keeps filling (ENOTEMPTY on the filesystem). */
const ATTEMPTS = 5;

async function deleteTree(driver: StorageDriver, path: string): Promise<void> {
  for (let i = 1; ; i++) {
    try {
      await deleteIfPresent(driver, path);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (i >= ATTEMPTS || (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'EBUSY')) throw err;
    }
  }
}

/**
 * Removes what makes `name` a repository: tags and manifest revisions (`_manifests`), layer links (`_layers`),
 * referrer entries and unfinished uploads. Nested repositories (`name/sub`) stay. Blobs stay in the global store
 * until gc finds them unreferenced.
 *
 * Order matters for a push racing the delete from another process: manifests go first and last, layer links in
 * between. A manifest PUT that checked its blobs before the layer links went and wrote its links after the first
 * pass is removed by the second pass; one that writes after the second pass finds its layer links gone
 * (MANIFEST_BLOB_UNKNOWN). Either way no manifest stays whose blobs were unlinked.
 */
export async function deleteRepositoryContent(driver: StorageDriver, name: string): Promise<void> {
  const root = paths.repository(name);
  await deleteTree(driver, paths.manifestsDir(name));
  await deleteTree(driver, paths.layersDir(name));
  await deleteTree(driver, `${root}/_referrers`);
  await deleteTree(driver, paths.uploadsDir(name));
  await deleteTree(driver, paths.manifestsDir(name));
  // The directory itself goes when nothing else (a nested repository) lives in it.
  const rest = (await listOrEmpty(driver, root)).map(basename);
  if (rest.length === 0) await deleteIfPresent(driver, root).catch(() => false);
}
