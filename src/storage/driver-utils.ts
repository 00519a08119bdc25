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

/**
 * Link contents already parsed. The link cache (link-cache.ts) hands out the same Buffer for a path until the link
 * changes, so a tag or revision link served from memory is parsed once, not on every manifest GET.
 */
const parsedLinks = new WeakMap<Buffer, Digest | null>();

/** The digest a link file names, or null when it is missing or not a digest. */
export async function readLink(driver: StorageDriver, path: string): Promise<Digest | null> {
  try {
    const content = await driver.getContent(path);
    let digest = parsedLinks.get(content);
    if (digest === undefined) {
      digest = tryParseDigest(content.toString('utf8').trim());
      parsedLinks.set(content, digest);
    }
    return digest;
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
