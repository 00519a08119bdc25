import type { Logger } from 'pino';
import { tryParseDigest, type Digest } from '../oci/digest.js';
import { isNotFound, type StorageDriver } from './driver.js';
import { listOrEmpty, statOrNull } from './driver-utils.js';
import { basename, paths, ROOT } from './paths.js';

/**
 * Blobs pending deletion: gc moves a candidate to `gc-pending/<run>/<alg>/<hex>` (outside `/blobs` and
 * `/repositories`, so registry:2 ignores it) before it re-checks and deletes it. Until then the move is undone by
 * gc's re-check, by the next run (after a crash), or by a manifest push that references the blob
 * ({@link restorePendingBlob}); see collector.ts for the whole argument.
 */
export const PENDING_ROOT = `${ROOT}/gc-pending`;

/** The pending path of a blob in run `runId`. */
export function pendingPath(runId: string, d: Digest): string {
  return `${PENDING_ROOT}/${runId}/${d.algorithm}/${d.hex}`;
}

/**
 * Moves a pending blob back to `/blobs` (or drops the pending copy when the blob was uploaded again meanwhile).
 * False when `pending` is gone (someone else restored or deleted it first: moves are atomic, one wins).
 */
export async function moveBack(driver: StorageDriver, pending: string, d: Digest): Promise<boolean> {
  try {
    if (await statOrNull(driver, paths.blobData(d))) await driver.delete(pending);
    else await driver.move(pending, paths.blobData(d));
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/**
 * For the registry's manifest PUT: when a blob a manifest references is missing, puts it back if a gc run has it
 * pending, and says whether it did. A client that saw the blob (HEAD) just before gc set it aside then still gets
 * its manifest stored, and gc, finding its pending copy gone, keeps the blob. Costs one listing of an (absent or
 * tiny) directory, and only on this error path.
 */
export async function restorePendingBlob(driver: StorageDriver, d: Digest): Promise<boolean> {
  for (const run of await listOrEmpty(driver, PENDING_ROOT)) {
    if (await moveBack(driver, `${run}/${d.algorithm}/${d.hex}`, d)) return true;
  }
  return false;
}

/** Moves back every blob an earlier run left pending (a crash, a kill, or another instance's run). */
export async function restorePending(driver: StorageDriver, logger?: Logger): Promise<number> {
  let restored = 0;
  for (const runDir of await listOrEmpty(driver, PENDING_ROOT)) {
    for (const algDir of await listOrEmpty(driver, runDir)) {
      for (const file of await listOrEmpty(driver, algDir)) {
        const d = tryParseDigest(`${basename(algDir)}:${basename(file)}`);
        if (d && (await moveBack(driver, file, d))) restored++;
      }
    }
    try {
      await driver.delete(runDir);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  if (restored > 0) logger?.warn({ restored }, 'gc: restored blobs an interrupted run left pending');
  return restored;
}

/**
 * `check()`, and when it fails, `check()` again after putting the blob back from a gc run's pending area (see
 * {@link restorePendingBlob}). For the registry's "does the manifest's blob exist" checks.
 */
export async function presentOrRestored(driver: StorageDriver, d: Digest, check: () => Promise<boolean>): Promise<boolean> {
  if (await check()) return true;
  return (await restorePendingBlob(driver, d)) && (await check());
}
