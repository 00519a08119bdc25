import type { Logger } from 'pino';
import { tryParseDigest } from '../oci/digest.js';
import { isNotFound, type StorageDriver } from '../storage/driver.js';
import { deleteIfPresent, listOrEmpty } from '../storage/driver-utils.js';
import { basename, paths } from '../storage/paths.js';
import type { RegistryStore } from '../storage/registry-store.js';

/** The marker that makes a repository a cache repository: `_proxy/upstream` holds the upstream's name. */
export function cacheMarkerPath(repo: string): string {
  return `${paths.repository(repo)}/_proxy/upstream`;
}

/** What one expiry run removed. */
export interface ExpiryResult {
  manifests: number;
  tags: number;
  blobs: number;
  repositories: number;
}

/** Link directories `<dir>/<alg>/<hex>` whose `link` was last written (= last pulled) before `cutoff`. */
async function expiredLinks(driver: StorageDriver, dir: string, cutoff: number): Promise<Array<{ dir: string; digest: string }>> {
  const out: Array<{ dir: string; digest: string }> = [];
  for (const alg of await listOrEmpty(driver, dir)) {
    for (const entry of await listOrEmpty(driver, alg)) {
      const d = tryParseDigest(`${basename(alg)}:${basename(entry)}`);
      if (!d) continue;
      try {
        const info = await driver.stat(`${entry}/link`);
        if (info.modTime.getTime() < cutoff) out.push({ dir: entry, digest: d.value });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
  }
  return out;
}

/**
 * Removes cached content not pulled for longer than its upstream's TTL: in every repository carrying the cache marker
 * (only the pull-through cache writes it, and pushes into mirrored repositories are refused, so no local push is
 * ever touched), manifest revisions and blob links whose link file is older than the TTL (each pull rewrites it),
 * the tags pointing at removed manifests, and the repository itself once empty. Blob bytes stay until garbage
 * collection finds them unreferenced.
 */
export async function expireCachedContent(
  deps: { driver: StorageDriver; store: RegistryStore; logger: Logger },
  ttlOf: (upstream: string) => number | undefined,
  now: number = Date.now(),
): Promise<ExpiryResult> {
  const { driver, store, logger } = deps;
  const result: ExpiryResult = { manifests: 0, tags: 0, blobs: 0, repositories: 0 };
  for (const repo of await store.listRepositories()) {
    let upstream: string;
    try {
      upstream = (await driver.getContent(cacheMarkerPath(repo))).toString('utf8').trim();
    } catch (err) {
      if (isNotFound(err)) continue;
      throw err;
    }
    const ttl = ttlOf(upstream);
    if (ttl === undefined || ttl <= 0) continue;
    const cutoff = now - ttl;
    const expiredManifests = await expiredLinks(driver, paths.revisionsDir(repo), cutoff);
    const gone = new Set<string>();
    for (const m of expiredManifests) {
      await deleteIfPresent(driver, m.dir);
      gone.add(m.digest);
      result.manifests++;
    }
    for (const tagDir of await listOrEmpty(driver, paths.tagsDir(repo))) {
      const tag = basename(tagDir);
      const d = await store.resolveTag(repo, tag);
      if (!d || gone.has(d.value) || !(await store.hasManifest(repo, d))) {
        await deleteIfPresent(driver, tagDir);
        result.tags++;
      }
    }
    for (const b of await expiredLinks(driver, paths.layersDir(repo), cutoff)) {
      await deleteIfPresent(driver, b.dir);
      result.blobs++;
    }
    let left = 0;
    for (const dir of [paths.revisionsDir(repo), paths.layersDir(repo)]) {
      for (const alg of await listOrEmpty(driver, dir)) left += (await listOrEmpty(driver, alg)).length;
    }
    if (left === 0 && (await listOrEmpty(driver, paths.uploadsDir(repo))).length === 0) {
      // Only this repository's own directories: a nested repository (`a/b` under `a`) stays.
      for (const own of [
        paths.manifestsDir(repo),
        paths.layersDir(repo),
        `${paths.repository(repo)}/_referrers`,
        `${paths.repository(repo)}/_uploads`,
        `${paths.repository(repo)}/_proxy`,
      ]) {
        await deleteIfPresent(driver, own);
      }
      if ((await listOrEmpty(driver, paths.repository(repo))).length === 0) await deleteIfPresent(driver, paths.repository(repo));
      result.repositories++;
    }
  }
  if (result.manifests + result.blobs + result.tags > 0) logger.info({ ...result }, 'expired cached content not pulled within its ttl');
  return result;
}
