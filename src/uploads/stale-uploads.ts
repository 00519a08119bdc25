import { isNotFound, type StorageDriver } from '../storage/driver.js';
import { deleteIfPresent, statOrNull } from '../storage/driver-utils.js';
import { basename } from '../storage/paths.js';
import type { UploadSessionStore } from './session-store.js';

/**
 * When an upload is abandoned: its last activity (start, last write) is at least `ageMs` old. One policy for the
 * upload purger, scheduled gc and `berth gc`, derived from `berth.uploadsessionttl`: the session store forgets a
 * session that long after its last request, so its data can never be completed after that, and before that it
 * must stay (a paused push resumes). `storage.maintenance.uploadpurging.age`, `berth.gc.uploadage` and
 * `--upload-age` can only make it later, never earlier than the session TTL.
 */
export interface StaleUploadPolicy {
  readonly ageMs: number;
}

/** The policy for a session TTL, postponed to the largest of `later` (options that ask to keep uploads longer). */
export function staleUploadPolicy(sessionTtlMs: number, ...later: Array<number | undefined>): StaleUploadPolicy {
  return { ageMs: Math.max(sessionTtlMs, ...later.filter((x): x is number => x !== undefined)) };
}

/** When the upload in `dir` last did something (start, last write) and its data size; null when nothing is readable. */
export async function uploadActivity(driver: StorageDriver, dir: string): Promise<{ last: number; bytes: number } | null> {
  let last = -Infinity;
  let bytes = 0;
  try {
    const started = Date.parse((await driver.getContent(`${dir}/startedat`)).toString('utf8').trim());
    if (Number.isFinite(started)) last = Math.max(last, started);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  for (const p of [`${dir}/startedat`, `${dir}/data`, dir]) {
    const info = await statOrNull(driver, p);
    if (!info) continue;
    last = Math.max(last, info.modTime.getTime());
    if (p.endsWith('/data')) bytes = info.size;
  }
  return Number.isFinite(last) ? { last, bytes } : null;
}

/** The activity of the upload in `dir` when it is stale by `policy` at `now`, else null. */
export async function staleUpload(
  policy: StaleUploadPolicy,
  driver: StorageDriver,
  dir: string,
  now = Date.now(),
): Promise<{ last: number; bytes: number } | null> {
  const activity = await uploadActivity(driver, dir);
  return activity && now - activity.last >= policy.ageMs ? activity : null;
}

/**
 * Removes an abandoned upload: its session first (a late PATCH then gets BLOB_UPLOAD_UNKNOWN rather than
 * writing into a deleted folder), then its data. False when the data was already gone.
 */
export async function removeUpload(driver: StorageDriver, sessions: UploadSessionStore | undefined, dir: string): Promise<boolean> {
  await sessions?.delete(basename(dir));
  return deleteIfPresent(driver, dir);
}
