import { tryParseDigest, type Digest } from '../oci/digest.js';
import { isNotFound, type FileInfo, type StorageDriver } from './driver.js';

/**
 * Driver calls where "nothing there" is an answer, not an error: the one place that maps PathNotFoundError to an
 * empty list, null or false. Every other error propagates.
 */

/** `driver.list`, with a missing directory listed as empty. */
export async function listOrEmpty(driver: StorageDriver, path: string): Promise<string[]> {
  try {
    return await driver.list(path);
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

/** `driver.stat`, or null when nothing is there. */
export async function statOrNull(driver: StorageDriver, path: string): Promise<FileInfo | null> {
  try {
    return await driver.stat(path);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

/** The digest a link file names, or null when it is missing or not a digest. */
export async function readLink(driver: StorageDriver, path: string): Promise<Digest | null> {
  try {
    return tryParseDigest((await driver.getContent(path)).toString('utf8').trim());
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

/** Deletes a file or tree; false when nothing was there. */
export async function deleteIfPresent(driver: StorageDriver, path: string): Promise<boolean> {
  try {
    await driver.delete(path);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}
