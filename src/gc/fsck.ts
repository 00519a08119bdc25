/**
 * `berth fsck`: an integrity check of a registry:2-layout storage through the {@link StorageDriver} interface.
 *
 * - Every blob is re-hashed (streamed through node's native sha256/sha512) and compared with its digest.
 * - Links are checked: `_layers` links, manifest revision links and tags' `current` links must name the digest of
 *   their path (tags: some digest) and that blob must exist.
 * - Every manifest revision's references are checked: its config and layers must exist in the global store and be
 *   linked into the repository (otherwise pulls fail), and an index's children must be manifests of the repository.
 *
 * `--repair` quarantines corrupt blobs: the data is *moved* to `/docker/registry/v2/quarantine/<alg>/<hex>/data`,
 * outside `/blobs`, rather than deleted. From then on the registry answers 404 for the digest, so no client is ever
 * served bytes that do not match their digest, and a client pushing the image again uploads a good copy (a HEAD
 * says the blob is missing); the bad bytes stay for inspection until an operator removes them. Before moving, the
 * blob is hashed once more, so a blob that was replaced by a good upload meanwhile is left alone.
 *
 * `--repair` also removes the links that point at missing blobs (quarantined ones included): layer links, manifest
 * revision links and tags whose manifest is gone, so a second run does not find them again. A manifest that
 * references a missing layer is left as is and reported again: pushing the image again repairs it.
 *
 * What a killed process can leave is reported and, under `--repair`, removed: a tag folder without a `current` link
 * (a first PUT of the tag interrupted between its index link and its `current` link, so the tag never existed) and
 * temporary files of interrupted writes older than {@link STALE_TEMPORARY_FILE_AGE_MS} (drivers that write through
 * them).
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.js';
import { isNotFound, STALE_TEMPORARY_FILE_AGE_MS, type StorageDriver } from '../storage/driver.js';
import { paths, ROOT } from '../storage/paths.js';
import { readLink, statOrNull } from '../storage/driver-utils.js';
import { DEFAULT_CONCURRENCY, forEachLimit, listBlobs, scanInventory } from './inventory.js';
import { noProgress, type ProgressSink } from './progress.js';

/** Where `--repair` moves corrupt blobs. */
export const QUARANTINE_ROOT = `${ROOT}/quarantine`;

/** The quarantine path of a blob's data. */
export function quarantinePath(d: Digest): string {
  return `${QUARANTINE_ROOT}/${d.algorithm}/${d.hex}/data`;
}

/** One problem fsck found. */
export interface FsckProblem {
  kind:
    | 'corrupt-blob'
    | 'dangling-link'
    | 'invalid-link'
    | 'manifest-missing-blob'
    | 'manifest-unlinked-blob'
    | 'manifest-missing-child'
    | 'unreadable-manifest'
    | 'interrupted-write';
  /** The blob, link target or manifest digest concerned. */
  digest: string;
  repository?: string;
  /** The manifest whose reference is broken. */
  manifest?: string;
  /** The storage path of a bad link. */
  path?: string;
  /** What is wrong, in words. */
  detail: string;
  /** For corrupt blobs: the digest of the bytes actually stored. */
  actual?: string;
  /** For corrupt blobs under --repair: moved to quarantine. */
  quarantined?: boolean;
  /** For dangling links, tags without `current` and interrupted writes under --repair: removed. */
  removed?: boolean;
}

/** The result of {@link fsck}. */
export interface FsckResult {
  blobsChecked: number;
  bytesHashed: number;
  repositories: number;
  manifestsChecked: number;
  problems: FsckProblem[];
  quarantined: number;
  interrupted: boolean;
  durationMs: number;
}

/** The digest of a stored file's bytes (streamed). */
async function hashFile(driver: StorageDriver, path: string, algorithm: Digest['algorithm'], onBytes?: (n: number) => void): Promise<string> {
  const hash = createHash(algorithm);
  const stream = await driver.reader(path);
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    onBytes?.(chunk.length);
  }
  return `${algorithm}:${hash.digest('hex')}`;
}

/** Checks the storage; see the module comment. */
export async function fsck(
  driver: StorageDriver,
  options: { repair?: boolean; concurrency?: number; progress?: ProgressSink; signal?: AbortSignal; logger?: Logger } = {},
): Promise<FsckResult> {
  const t0 = Date.now();
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  const progress = options.progress ?? noProgress;
  const logger = options.logger;
  const aborted = () => options.signal?.aborted === true;
  const problems: FsckProblem[] = [];
  const report = (p: FsckProblem) => {
    problems.push(p);
    logger?.warn(p, `fsck: ${p.kind}`);
  };
  /** Reports a dangling link; under --repair removes `dir` (the link's directory, or a tag's). */
  const dangling = async (p: FsckProblem, dir: string) => {
    if (options.repair) {
      try {
        await driver.delete(dir);
        p.removed = true;
      } catch (err) {
        if (!isNotFound(err)) throw err;
        p.removed = true;
      }
    }
    report(p);
  };

  // ---- blobs -----------------------------------------------------------------------------------------------
  const blobs = await listBlobs(driver);
  const present = new Set<string>();
  const sizes = new Map<string, number>();
  await forEachLimit(blobs, concurrency, async (b) => {
    const info = await statOrNull(driver, paths.blobData(b.digest));
    if (info && !info.isDir) {
      present.add(b.digest.value);
      sizes.set(b.digest.value, info.size);
    }
  });
  let bytesHashed = 0;
  let blobsChecked = 0;
  let quarantined = 0;
  progress.start(
    'hashing blobs',
    [...sizes.values()].reduce((n, s) => n + s, 0),
    'bytes',
  );
  await forEachLimit(
    blobs.filter((b) => present.has(b.digest.value)),
    Math.max(1, Math.min(4, concurrency)),
    async (b) => {
      if (aborted()) return;
      let actual: string;
      try {
        actual = await hashFile(driver, paths.blobData(b.digest), b.digest.algorithm, (n) => {
          bytesHashed += n;
          progress.tick(n);
        });
      } catch (err) {
        if (isNotFound(err)) return; // deleted meanwhile (a concurrent gc)
        throw err;
      }
      blobsChecked++;
      if (actual === b.digest.value) return;
      const problem: FsckProblem = {
        kind: 'corrupt-blob',
        digest: b.digest.value,
        actual,
        detail: `content hashes to ${actual}`,
      };
      if (options.repair) {
        // Hash again right before moving: a good copy may have been uploaded meanwhile.
        const again = await hashFile(driver, paths.blobData(b.digest), b.digest.algorithm).catch(() => null);
        if (again !== null && again !== b.digest.value) {
          await driver.move(paths.blobData(b.digest), quarantinePath(b.digest));
          problem.quarantined = true;
          quarantined++;
          present.delete(b.digest.value);
        }
      }
      report(problem);
    },
  );
  progress.done();
  const good = (d: Digest) => present.has(d.value);

  // ---- links and manifests ---------------------------------------------------------------------------------
  const inv = await scanInventory(driver, { concurrency, progress });
  let manifestsChecked = 0;
  progress.start('checking links and manifests', inv.repositories.length);
  for (const repo of inv.repositories) {
    if (aborted()) break;
    for (const value of repo.badRevisions) {
      report({ kind: 'invalid-link', repository: repo.name, digest: value, detail: 'manifest revision link names another digest' });
    }
    await forEachLimit(repo.layers.values(), concurrency, async (d) => {
      const link = await readLink(driver, paths.layerLink(repo.name, d));
      if (!link || link.value !== d.value) {
        report({
          kind: 'invalid-link',
          repository: repo.name,
          digest: d.value,
          path: paths.layerLink(repo.name, d),
          detail: 'layer link is missing or names another digest',
        });
      } else if (!good(d)) {
        await dangling(
          {
            kind: 'dangling-link',
            repository: repo.name,
            digest: d.value,
            path: paths.layerLink(repo.name, d),
            detail: 'layer link to a missing blob',
          },
          paths.layerLinkDir(repo.name, d),
        );
      }
    });
    for (const [tag, d] of repo.tags) {
      if (!d)
        await dangling(
          {
            kind: 'invalid-link',
            repository: repo.name,
            digest: '',
            path: paths.tagCurrentLink(repo.name, tag),
            detail: `tag ${tag} has no readable current link`,
          },
          paths.tagDir(repo.name, tag),
        );
      else if (!good(d))
        await dangling(
          {
            kind: 'dangling-link',
            repository: repo.name,
            digest: d.value,
            path: paths.tagCurrentLink(repo.name, tag),
            detail: `tag ${tag} points at a missing manifest`,
          },
          paths.tagDir(repo.name, tag),
        );
      else if (!repo.revisions.has(d.value))
        await dangling(
          {
            kind: 'dangling-link',
            repository: repo.name,
            digest: d.value,
            path: paths.tagCurrentLink(repo.name, tag),
            detail: `tag ${tag} points at a manifest that is not in the repository`,
          },
          paths.tagDir(repo.name, tag),
        );
    }
    for (const d of repo.revisions.values()) {
      manifestsChecked++;
      if (!good(d)) {
        await dangling(
          {
            kind: 'dangling-link',
            repository: repo.name,
            digest: d.value,
            path: paths.revisionLink(repo.name, d),
            detail: 'manifest revision link to a missing blob',
          },
          paths.revisionDir(repo.name, d),
        );
        continue;
      }
      const refs = inv.manifests.get(d.value);
      if (!refs || refs.status === 'missing') continue;
      if (refs.status === 'unreadable') {
        report({ kind: 'unreadable-manifest', repository: repo.name, digest: d.value, detail: 'manifest blob is not JSON or too large' });
        continue;
      }
      if (refs.status !== 'parsed') continue; // schema 1 and unknown types: their references are not known exactly
      for (const b of refs.blobs) {
        if (!good(b)) {
          report({
            kind: 'manifest-missing-blob',
            repository: repo.name,
            manifest: d.value,
            digest: b.value,
            detail: `manifest ${d.value} references missing blob ${b.value}`,
          });
        } else if (!repo.layers.has(b.value)) {
          report({
            kind: 'manifest-unlinked-blob',
            repository: repo.name,
            manifest: d.value,
            digest: b.value,
            detail: `manifest ${d.value} references blob ${b.value} that is not linked into the repository`,
          });
        }
      }
      for (const c of refs.children) {
        if (!repo.revisions.has(c.value) || !good(c)) {
          report({
            kind: 'manifest-missing-child',
            repository: repo.name,
            manifest: d.value,
            digest: c.value,
            detail: `index ${d.value} references manifest ${c.value} the repository does not have`,
          });
        }
      }
    }
    progress.tick();
  }
  progress.done();

  // ---- what interrupted writes left --------------------------------------------------------------------------
  if (driver.removeStaleTemporaryFiles && !aborted()) {
    const before = new Date(Date.now() - STALE_TEMPORARY_FILE_AGE_MS);
    for (const path of await driver.removeStaleTemporaryFiles(before, { dryRun: options.repair !== true })) {
      const p: FsckProblem = { kind: 'interrupted-write', digest: '', path, detail: 'temporary file left by an interrupted write' };
      if (options.repair) p.removed = true;
      report(p);
    }
  }
  const result: FsckResult = {
    blobsChecked,
    bytesHashed,
    repositories: inv.repositories.length,
    manifestsChecked,
    problems,
    quarantined,
    interrupted: aborted(),
    durationMs: Date.now() - t0,
  };
  logger?.info({ ...result, problems: problems.length }, 'fsck: finished');
  return result;
}
