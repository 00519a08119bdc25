/**
 * Online garbage collection (mark and sweep) on any {@link StorageDriver}, in registry:2's layout.
 *
 * What is kept (mark):
 * - Every manifest a tag of any repository points at, the children of kept indexes and (with `deleteUntagged`) the
 *   referrers of kept manifests (`_referrers` links and `subject` fields), recursively. Without `deleteUntagged`
 *   every manifest revision is kept, as in Distribution's `garbage-collect`.
 * - With `deleteUntagged`, a revision no tag reaches is deleted (revision link, its tag-history entries and its
 *   referrer link), unless its revision link is younger than the grace period: `PUT /manifests/<tag>` writes the
 *   revision link before the tag link, and clients push index children by digest before the index, so a young
 *   untagged manifest is usually one a push is still working on.
 * - Blobs referenced by kept manifests (config, layers, foreign layers if present) and the manifest blobs
 *   themselves. Manifests berth cannot parse (Docker schema 1 written by registry:2, unknown types) keep every
 *   digest-shaped string they contain, so nothing they might use is lost.
 *
 * What is deleted (sweep):
 * - Blobs of `/blobs` that no kept manifest references, together with the `_layers` links to them (links to a
 *   missing blob are just dangling entries fsck would report). `_layers` links to blobs that survive are kept, as
 *   Distribution keeps them: a link is what tells a pushing client "this repository has the blob, skip the
 *   upload", so removing one under a running push would make its manifest fail; links cost a few bytes.
 * - Upload directories (`_uploads/<id>`) whose last activity (start time, last write) is older than `uploadAgeMs`
 *   (default: the larger of the grace period and 24 h, the default upload session lifetime, so a paused upload
 *   that may still resume keeps its data).
 *
 * Why this is safe while the registry serves pushes (the part `garbage-collect` never was):
 * 1. Grace. A blob whose data file, or any `_layers` link to it, is younger than the grace period (default 1 h) is
 *    never a candidate. Uploading writes the data file, completing an upload or mounting writes the link, so a
 *    blob pushed, mounted or completed recently is safe even though no manifest references it yet.
 * 2. Pending deletion instead of deletion. Candidates are first *moved* to `gc-pending/<run>/` (outside `/blobs`,
 *    see pending.ts). From that moment a HEAD or GET answers 404 (the client uploads the blob again) and a mount
 *    falls back to an upload; a manifest PUT that references a pending blob (its client saw the blob just before
 *    the move) puts the blob back and succeeds (`restorePendingBlob`, called by RegistryStore.putManifest). No
 *    push can store a manifest whose blob is then deleted.
 * 3. Re-check after a settle time. A push that checked its blobs *before* the move writes its revision link
 *    within moments. After `settleMs` (default: min(grace, 5 s)) gc marks again from every tag and revision that
 *    exists now (a second mark pass covering manifests pushed since the start), re-lists the `_layers` links of
 *    the pending blobs and re-stats them. A pending blob that is now referenced, or linked within the grace
 *    period, is moved back; only the others are deleted. A manifest pushed after the scan may itself be pending
 *    (the run can last longer than the grace period): the second pass reads it from its pending location, so
 *    what it references is marked too.
 * 4. Untagged manifests get the same treatment: just before deleting one gc re-reads the repository's tags and
 *    re-stats its revision link; after the deletions and the settle time it marks again, and a deleted manifest
 *    that a manifest pushed meanwhile references (an index's child, a referrer's subject chain) is put back.
 * 5. Whatever is interrupted is undone: SIGINT stops between deletions after the current batch is re-checked, and
 *    the next run first moves back everything an earlier (crashed) run left pending.
 * What remains is a push whose manifest PUT comes after the pending copy is finally deleted although its client
 * saw the blob before it was set aside (refused cleanly with MANIFEST_BLOB_UNKNOWN; a retry uploads the blob), a
 * PUT that takes longer than the settle time between its check and writing its revision link, and (filesystem only) removing an empty blob directory, older than the grace period, in the instant a re-upload
 * of that very blob renames its data into it; both are far narrower than any offline gc's "stop the registry".
 * A grace of 0 disables the settle wait too: use it only when nothing pushes (the offline `garbage-collect` case).
 *
 * A dry run performs the same marking and candidate checks without moving anything, so it reports exactly what a
 * real run started right after it deletes (concurrent pushes aside).
 */
import { GC_CONTEXT } from '../events/event.js';
import type { EventSink } from '../events/registry-events.js';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { writeGcLastRun } from './last-run.js';
import type { Digest } from '../oci/digest.js';
import { isNotFound, type StorageDriver } from '../storage/driver.js';
import { deleteIfPresent, listOrEmpty, statOrNull } from '../storage/driver-utils.js';
import { basename, paths } from '../storage/paths.js';
import {
  DEFAULT_CONCURRENCY,
  forEachLimit,
  listBlobs,
  listRepositoryNames,
  loadManifests,
  manifestDigestsOf,
  readTags,
  scanInventory,
  scanRepositoryManifests,
  type BlobEntry,
  type Inventory,
  type ManifestRefs,
} from './inventory.js';
import { moveBack, PENDING_ROOT, pendingPath, restorePending } from '../storage/pending.js';
import { noProgress, type ProgressSink } from './progress.js';
import type { UploadSessionStore } from '../uploads/session-store.js';
import { removeUpload, uploadActivity } from '../uploads/stale-uploads.js';

/** Default grace period: 1 h. */
export const DEFAULT_GRACE_MS = 3_600_000;
/** Default minimum age of abandoned upload data: 24 h (berth's default upload session lifetime). */
export const DEFAULT_UPLOAD_AGE_MS = 24 * 3_600_000;
export { PENDING_ROOT, restorePending, restorePendingBlob } from '../storage/pending.js';

/** Options of {@link runGc}. */
export interface GcOptions {
  /** Report what would be deleted, delete nothing. */
  dryRun?: boolean;
  /** Who runs it, recorded with the outcome in `_berth/gc-last.json` (last-run.ts); default `server`. */
  source?: 'cli' | 'server';
  /** Also delete manifest revisions no tag reaches (and then their blobs). */
  deleteUntagged?: boolean;
  /** Nothing written more recently than this is deleted (default 1 h). */
  graceMs?: number;
  /** How long pending blobs wait before the re-check (default min(grace, 5 s)). */
  settleMs?: number;
  /**
   * Minimum age of the last activity of upload data that is deleted (default max(grace, 24 h)); callers pass the
   * stale-upload policy's age (src/uploads/stale-uploads.ts).
   */
  uploadAgeMs?: number;
  /** The upload sessions: an abandoned upload's session is removed with its data. */
  sessions?: UploadSessionStore;
  /** Blobs moved to pending per re-check (default 1000). */
  batchSize?: number;
  /** Driver calls in flight (default 16). */
  concurrency?: number;
  /** Aborting stops the run safely between deletions. */
  signal?: AbortSignal;
  logger?: Logger;
  progress?: ProgressSink;
  /** Called for every deletion (or would-be deletion in a dry run), in order. */
  onDeletion?: (d: GcDeletion) => void;
  /** Gets a `delete` event (and audit line) per deleted manifest and per removed blob link, once the run is over. */
  events?: EventSink;
}

/** One thing gc deleted (or would delete). */
export interface GcDeletion {
  kind: 'manifest' | 'blob' | 'upload';
  /** The repository of a manifest or upload. */
  repository?: string;
  /** The digest of a manifest or blob. */
  digest?: string;
  /** The upload id. */
  upload?: string;
  /** Bytes freed (manifest revisions free nothing themselves: their blob is swept as a blob). */
  bytes: number;
  /** Repositories whose `_layers` link to a deleted blob was removed. */
  links?: string[];
}

/** The outcome of a run, as numbers for logs and metrics. */
export interface GcResult {
  dryRun: boolean;
  deleteUntagged: boolean;
  graceMs: number;
  startedAt: Date;
  durationMs: number;
  /** True when the run was aborted before it finished. */
  interrupted: boolean;
  repositories: number;
  blobsScanned: number;
  manifestsDeleted: number;
  /** Deleted manifests put back because a manifest pushed during the run references them. */
  manifestsRestored: number;
  blobsDeleted: number;
  blobBytesReclaimed: number;
  layerLinksDeleted: number;
  uploadsDeleted: number;
  uploadBytesReclaimed: number;
  /** Blob and upload bytes together. */
  bytesReclaimed: number;
  /** Unreferenced blobs kept because they (or a link to them) are younger than the grace period. */
  blobsProtected: number;
  /** Candidates moved back because the re-check found them referenced or freshly linked. */
  blobsRescued: number;
  deletions: GcDeletion[];
}

/**
 * The marking state: manifests kept per repository and blobs marked. {@link keep} follows children and (when
 * enabled) referrers; it only ever adds, so a second pass can extend it.
 */
export class Marker {
  /** repository → digests of kept manifests. */
  readonly kept = new Map<string, Set<string>>();
  /** Digests of marked blobs (manifest blobs included). */
  readonly blobs = new Set<string>();
  private readonly subjects = new Map<string, Map<string, Digest[]>>();

  constructor(
    readonly manifests: Map<string, ManifestRefs>,
    private readonly followReferrers: boolean,
  ) {}

  /** Records that manifest `referrer` of `repo` has subject `subject`. */
  addReferrer(repo: string, subject: Digest, referrer: Digest): void {
    let bySubject = this.subjects.get(repo);
    if (!bySubject) this.subjects.set(repo, (bySubject = new Map<string, Digest[]>()));
    const list = bySubject.get(subject.value) ?? [];
    if (!list.some((d) => d.value === referrer.value)) list.push(referrer);
    bySubject.set(subject.value, list);
  }

  isKept(repo: string, d: Digest): boolean {
    return this.kept.get(repo)?.has(d.value) ?? false;
  }

  /** Processes a kept manifest again (its references were unknown when it was kept: its blob was missing). */
  revisit(repo: string, d: Digest): void {
    this.kept.get(repo)?.delete(d.value);
    this.keep(repo, d);
  }

  /** Keeps manifest `root` of `repo` and everything it reaches. */
  keep(repo: string, root: Digest): void {
    let set = this.kept.get(repo);
    if (!set) this.kept.set(repo, (set = new Set()));
    const stack = [root];
    for (let d = stack.pop(); d; d = stack.pop()) {
      if (set.has(d.value)) continue;
      set.add(d.value);
      this.blobs.add(d.value);
      const refs = this.manifests.get(d.value);
      if (refs) {
        for (const b of refs.blobs) this.blobs.add(b.value);
        for (const b of refs.foreign) this.blobs.add(b.value);
        stack.push(...refs.children);
      }
      if (this.followReferrers) stack.push(...(this.subjects.get(repo)?.get(d.value) ?? []));
    }
  }
}

/** A manifest revision the marking did not keep. */
export interface UnkeptManifest {
  repository: string;
  digest: Digest;
}

function isYoung(modTime: Date, now: number, graceMs: number): boolean {
  return graceMs > 0 && now - modTime.getTime() < graceMs;
}

/**
 * Marks from an inventory. Returns the marker and (with `deleteUntagged`) the revisions to delete, parents before
 * children and subjects before referrers, so a manifest kept at the last moment keeps what it reaches.
 */
export async function markInventory(
  driver: StorageDriver,
  inv: Inventory,
  options: { deleteUntagged: boolean; graceMs: number; now?: number; concurrency?: number },
): Promise<{ marker: Marker; unkept: UnkeptManifest[] }> {
  const now = options.now ?? Date.now();
  const marker = new Marker(inv.manifests, options.deleteUntagged);
  for (const repo of inv.repositories) {
    for (const rev of repo.revisions.values()) {
      const subject = inv.manifests.get(rev.value)?.subject;
      if (subject) marker.addReferrer(repo.name, subject, rev);
    }
    for (const r of repo.referrers) if (repo.revisions.has(r.referrer.value)) marker.addReferrer(repo.name, r.subject, r.referrer);
  }
  for (const repo of inv.repositories) {
    for (const d of repo.tags.values()) if (d) marker.keep(repo.name, d);
    if (!options.deleteUntagged) for (const d of repo.revisions.values()) marker.keep(repo.name, d);
  }
  if (!options.deleteUntagged) return { marker, unkept: [] };

  // Young untagged revisions are probably being pushed: they are roots too.
  const unreached = inv.repositories.flatMap((repo) =>
    [...repo.revisions.values()].filter((d) => !marker.isKept(repo.name, d)).map((digest) => ({ repository: repo.name, digest })),
  );
  const young: UnkeptManifest[] = [];
  await forEachLimit(unreached, options.concurrency ?? DEFAULT_CONCURRENCY, async (m) => {
    const info = await statOrNull(driver, paths.revisionLink(m.repository, m.digest));
    if (!info || isYoung(info.modTime, now, options.graceMs)) young.push(m);
  });
  for (const m of young) marker.keep(m.repository, m.digest);
  const unkept = unreached.filter((m) => !marker.isKept(m.repository, m.digest));
  const rank = (m: UnkeptManifest) => {
    const refs = inv.manifests.get(m.digest.value);
    return refs && refs.children.length > 0 && refs.status === 'parsed' ? 0 : refs?.subject ? 2 : 1;
  };
  unkept.sort((a, b) => rank(a) - rank(b) || (a.repository < b.repository ? -1 : a.repository > b.repository ? 1 : 0));
  return { marker, unkept };
}

/**
 * The second mark pass: re-reads tags and revisions of every repository (new ones included) and keeps what is not
 * kept yet: every tag target, plus every revision (`all`) or only revisions the first scan did not see (`new`).
 */
async function remark(
  driver: StorageDriver,
  marker: Marker,
  inv: Inventory,
  which: 'all' | 'new',
  concurrency: number,
  pendingOf?: (d: Digest) => string | undefined,
): Promise<void> {
  const before = new Map(inv.repositories.map((r) => [r.name, r.revisions]));
  for (const name of await listRepositoryNames(driver)) {
    const now = await scanRepositoryManifests(driver, name, concurrency);
    // A manifest whose blob was missing is read again: it may have been written since, or (a manifest pushed
    // after the scan whose blob this run set aside) be pending, where it is read from.
    const retry = manifestDigestsOf(now).filter((d) => marker.manifests.get(d.value)?.status === 'missing');
    for (const d of retry) marker.manifests.delete(d.value);
    await loadManifests(driver, manifestDigestsOf(now), marker.manifests, concurrency, undefined, pendingOf);
    for (const d of retry) {
      if (marker.manifests.get(d.value)?.status !== 'missing' && marker.isKept(name, d)) marker.revisit(name, d);
    }
    for (const rev of now.revisions.values()) {
      const subject = marker.manifests.get(rev.value)?.subject;
      if (subject) marker.addReferrer(name, subject, rev);
    }
    for (const d of now.tags.values()) if (d && !marker.isKept(name, d)) marker.keep(name, d);
    const seen = before.get(name);
    for (const d of now.revisions.values()) {
      if (marker.isKept(name, d)) continue;
      if (which === 'all' || !seen?.has(d.value)) marker.keep(name, d);
    }
  }
}

/** A blob the sweep may delete: unmarked, and neither it nor a link to it is younger than the grace period. */
export interface BlobCandidate {
  digest: Digest;
  size: number;
  /** Repositories with a `_layers` link to it. */
  links: string[];
}

/**
 * The sweep's candidates among `blobs`: not marked, data present and older than the grace period, and every
 * `_layers` link to it older too. With `removeEmptyDirs`, blob directories without data (left by earlier sweeps on
 * the filesystem) that are older than the grace period are removed on the way.
 */
export async function findBlobCandidates(
  driver: StorageDriver,
  inv: Inventory,
  marker: Marker,
  blobs: BlobEntry[],
  options: { graceMs: number; concurrency?: number; progress?: ProgressSink; removeEmptyDirs?: boolean; now?: number },
): Promise<{ candidates: BlobCandidate[]; protected: number }> {
  const now = options.now ?? Date.now();
  const progress = options.progress ?? noProgress;
  const linksOf = new Map<string, string[]>();
  for (const repo of inv.repositories) {
    for (const d of repo.layers.keys()) {
      const list = linksOf.get(d) ?? [];
      list.push(repo.name);
      linksOf.set(d, list);
    }
  }
  const candidates: BlobCandidate[] = [];
  let protectedCount = 0;
  progress.start('checking blobs', blobs.length);
  await forEachLimit(blobs, options.concurrency ?? DEFAULT_CONCURRENCY, async (entry) => {
    progress.tick();
    if (marker.blobs.has(entry.digest.value)) return;
    const info = await statOrNull(driver, paths.blobData(entry.digest));
    if (!info || info.isDir) {
      if (options.removeEmptyDirs && !info) {
        const dir = await statOrNull(driver, entry.dir);
        if (dir?.isDir && !isYoung(dir.modTime, now, options.graceMs) && (await listOrEmpty(driver, entry.dir)).length === 0) {
          await deleteIfPresent(driver, entry.dir);
        }
      }
      return;
    }
    if (isYoung(info.modTime, now, options.graceMs)) {
      protectedCount++;
      return;
    }
    const links = linksOf.get(entry.digest.value) ?? [];
    for (const repo of links) {
      const link = await statOrNull(driver, paths.layerLink(repo, entry.digest));
      if (link && isYoung(link.modTime, now, options.graceMs)) {
        protectedCount++;
        return;
      }
    }
    candidates.push({ digest: entry.digest, size: info.size, links: [...links].sort() });
  });
  progress.done();
  candidates.sort((a, b) => (a.digest.value < b.digest.value ? -1 : 1));
  return { candidates, protected: protectedCount };
}

/** Upload directories whose last activity is at least `ageMs` old. */
export async function findStaleUploads(
  driver: StorageDriver,
  inv: Inventory,
  ageMs: number,
  now = Date.now(),
): Promise<Array<GcDeletion & { kind: 'upload'; repository: string; upload: string }>> {
  const out: Array<GcDeletion & { kind: 'upload'; repository: string; upload: string }> = [];
  for (const repo of inv.repositories) {
    for (const dir of repo.uploads) {
      const activity = await uploadActivity(driver, dir);
      if (activity && now - activity.last >= ageMs) out.push({ kind: 'upload', repository: repo.name, upload: basename(dir), bytes: activity.bytes });
    }
  }
  return out;
}

/** Runs garbage collection; see the module comment for what it deletes and why it is safe online. */
export async function runGc(driver: StorageDriver, options: GcOptions = {}): Promise<GcResult> {
  const startedAt = new Date();
  const t0 = Date.now();
  const dryRun = options.dryRun ?? false;
  const deleteUntagged = options.deleteUntagged ?? false;
  const graceMs = Math.max(0, options.graceMs ?? DEFAULT_GRACE_MS);
  const settleMs = Math.max(0, options.settleMs ?? Math.min(graceMs, 5000));
  const uploadAgeMs = Math.max(graceMs, options.uploadAgeMs ?? DEFAULT_UPLOAD_AGE_MS);
  const batchSize = Math.max(1, options.batchSize ?? 1000);
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  const progress = options.progress ?? noProgress;
  const logger = options.logger;
  const aborted = () => options.signal?.aborted === true;
  const runId = `${startedAt.toISOString().replace(/[:.]/g, '-')}-${randomUUID().slice(0, 8)}`;

  const result: GcResult = {
    dryRun,
    deleteUntagged,
    graceMs,
    startedAt,
    durationMs: 0,
    interrupted: false,
    repositories: 0,
    blobsScanned: 0,
    manifestsDeleted: 0,
    manifestsRestored: 0,
    blobsDeleted: 0,
    blobBytesReclaimed: 0,
    layerLinksDeleted: 0,
    uploadsDeleted: 0,
    uploadBytesReclaimed: 0,
    bytesReclaimed: 0,
    blobsProtected: 0,
    blobsRescued: 0,
    deletions: [],
  };
  const record = (d: GcDeletion) => {
    result.deletions.push(d);
    options.onDeletion?.(d);
  };
  logger?.info({ dryRun, deleteUntagged, graceMs }, 'gc: started');

  if (!dryRun) await restorePending(driver, logger);
  const inv = await scanInventory(driver, { concurrency, progress });
  result.repositories = inv.repositories.length;
  const { marker, unkept } = await markInventory(driver, inv, { deleteUntagged, graceMs, concurrency });

  // ---- untagged manifests ----------------------------------------------------------------------------------
  if (unkept.length > 0) {
    // Tags moved and manifests pushed since the scan are roots too.
    await remark(driver, marker, inv, 'new', concurrency);
    progress.start('deleting untagged manifests', unkept.length);
    const tagsOf = new Map(inv.repositories.map((r) => [r.name, [...r.tags.keys()]]));
    const deletedManifests: UnkeptManifest[] = [];
    for (const m of unkept) {
      if (aborted()) break;
      progress.tick();
      if (marker.isKept(m.repository, m.digest)) continue;
      // Last look: a revision written again, or a tag pointing at it now, keeps it (and what it reaches).
      const link = await statOrNull(driver, paths.revisionLink(m.repository, m.digest));
      if (!link) continue;
      const tagged = [...(await readTags(driver, m.repository, concurrency)).values()].some((d) => d?.value === m.digest.value);
      if (tagged || isYoung(link.modTime, Date.now(), graceMs)) {
        marker.keep(m.repository, m.digest);
        continue;
      }
      if (!dryRun) {
        for (const tag of tagsOf.get(m.repository) ?? []) {
          await deleteIfPresent(driver, paths.tagIndexLink(m.repository, tag, m.digest).replace(/\/link$/, ''));
        }
        const subject = marker.manifests.get(m.digest.value)?.subject;
        if (subject) await deleteIfPresent(driver, paths.referrerDir(m.repository, subject, m.digest));
        if (!(await deleteIfPresent(driver, paths.revisionDir(m.repository, m.digest)))) continue;
      }
      result.manifestsDeleted++;
      deletedManifests.push(m);
      logger?.debug({ repository: m.repository, digest: m.digest.value, dryRun }, 'gc: deleted untagged manifest');
      record({ kind: 'manifest', repository: m.repository, digest: m.digest.value, bytes: 0 });
    }
    progress.done();
    if (!dryRun && deletedManifests.length > 0) {
      // An index (or referrer) whose push checked its children just before a deletion references a deleted
      // manifest: after the settle time, mark again and put such manifests back (their blobs are still there).
      if (settleMs > 0) await sleep(settleMs);
      await remark(driver, marker, inv, 'all', concurrency);
      for (const m of deletedManifests) {
        if (!marker.isKept(m.repository, m.digest)) continue;
        // Pushed again by a client meanwhile: the deletion stands, the client put it back itself.
        if (await statOrNull(driver, paths.revisionLink(m.repository, m.digest))) continue;
        await driver.putContent(paths.revisionLink(m.repository, m.digest), Buffer.from(m.digest.value));
        const subject = marker.manifests.get(m.digest.value)?.subject;
        if (subject) await driver.putContent(paths.referrerLink(m.repository, subject, m.digest), Buffer.from(m.digest.value));
        result.manifestsDeleted--;
        result.manifestsRestored++;
        result.deletions = result.deletions.filter((d) => !(d.kind === 'manifest' && d.repository === m.repository && d.digest === m.digest.value));
        logger?.warn(
          { repository: m.repository, digest: m.digest.value },
          'gc: a manifest pushed during the run references a deleted manifest; restored it',
        );
      }
    }
  }

  // ---- blobs -----------------------------------------------------------------------------------------------
  const blobs = aborted() ? [] : await listBlobs(driver);
  result.blobsScanned = blobs.length;
  const found = await findBlobCandidates(driver, inv, marker, blobs, { graceMs, concurrency, progress, removeEmptyDirs: !dryRun });
  result.blobsProtected = found.protected;
  const candidates = found.candidates;

  const reportBlob = (c: BlobCandidate, links: string[]) => {
    result.blobsDeleted++;
    result.blobBytesReclaimed += c.size;
    result.layerLinksDeleted += links.length;
    logger?.debug({ digest: c.digest.value, bytes: c.size, links, dryRun }, 'gc: deleted blob');
    record({ kind: 'blob', digest: c.digest.value, bytes: c.size, links });
  };

  if (dryRun) {
    for (const c of candidates) reportBlob(c, c.links);
  } else {
    progress.start(
      'deleting blobs',
      candidates.reduce((n, c) => n + c.size, 0),
      'bytes',
    );
    try {
      for (let i = 0; i < candidates.length && !aborted(); i += batchSize) {
        const pending: BlobCandidate[] = [];
        for (const c of candidates.slice(i, i + batchSize)) {
          if (aborted()) break;
          try {
            await driver.move(paths.blobData(c.digest), pendingPath(runId, c.digest));
            pending.push(c);
          } catch (err) {
            if (!isNotFound(err)) throw err;
          }
        }
        if (pending.length === 0) continue;
        if (settleMs > 0) await sleep(settleMs);
        // The re-check: manifests pushed meanwhile, and links written meanwhile.
        const pendingSet = new Set(pending.map((c) => c.digest.value));
        await remark(driver, marker, inv, 'all', concurrency, (d) => (pendingSet.has(d.value) ? pendingPath(runId, d) : undefined));
        const linkedNow = new Map<string, string[]>();
        for (const name of await listRepositoryNames(driver)) {
          for (const algDir of await listOrEmpty(driver, paths.layersDir(name))) {
            for (const entry of await listOrEmpty(driver, algDir)) {
              const value = `${basename(algDir)}:${basename(entry)}`;
              if (!pendingSet.has(value)) continue;
              const list = linkedNow.get(value) ?? [];
              list.push(name);
              linkedNow.set(value, list);
            }
          }
        }
        for (const c of pending) {
          const links = (linkedNow.get(c.digest.value) ?? []).sort();
          let keepIt = marker.blobs.has(c.digest.value);
          for (const repo of links) {
            if (keepIt) break;
            const link = await statOrNull(driver, paths.layerLink(repo, c.digest));
            if (link && isYoung(link.modTime, Date.now(), graceMs)) keepIt = true;
          }
          if (keepIt) {
            await moveBack(driver, pendingPath(runId, c.digest), c.digest);
            result.blobsRescued++;
            logger?.info({ digest: c.digest.value }, 'gc: blob referenced or linked during the run; kept');
            continue;
          }
          // Gone from pending: another run restored it. Back in /blobs: uploaded again meanwhile, keep its links.
          if (!(await deleteIfPresent(driver, pendingPath(runId, c.digest)))) continue;
          if (await statOrNull(driver, paths.blobData(c.digest))) continue;
          const removed: string[] = [];
          for (const repo of links) {
            // A link written since the check belongs to an upload or mount happening now: leave it.
            const link = await statOrNull(driver, paths.layerLink(repo, c.digest));
            if (link && isYoung(link.modTime, Date.now(), graceMs)) continue;
            if (await deleteIfPresent(driver, paths.layerLinkDir(repo, c.digest))) removed.push(repo);
          }
          reportBlob(c, removed);
          progress.tick(c.size);
        }
      }
    } catch (err) {
      // A storage error mid-batch: put back whatever is still pending before giving up.
      await restorePending(driver, logger).catch(() => undefined);
      throw err;
    }
    progress.done();
    await deleteIfPresent(driver, `${PENDING_ROOT}/${runId}`);
  }

  // ---- uploads ---------------------------------------------------------------------------------------------
  for (const u of aborted() ? [] : await findStaleUploads(driver, inv, uploadAgeMs)) {
    if (aborted()) break;
    if (!dryRun) {
      // Re-check: a write since the listing makes it active again.
      const activity = await uploadActivity(driver, `${paths.uploadsDir(u.repository)}/${u.upload}`);
      if (!activity || Date.now() - activity.last < uploadAgeMs) continue;
      if (!(await removeUpload(driver, options.sessions, `${paths.uploadsDir(u.repository)}/${u.upload}`))) continue;
    }
    result.uploadsDeleted++;
    result.uploadBytesReclaimed += u.bytes;
    logger?.debug({ repository: u.repository, upload: u.upload, bytes: u.bytes, dryRun }, 'gc: deleted upload data');
    record(u);
  }

  if (!dryRun && options.events) await emitGcDeletions(options.events, result.deletions);
  result.interrupted = aborted();
  result.bytesReclaimed = result.blobBytesReclaimed + result.uploadBytesReclaimed;
  result.durationMs = Date.now() - t0;
  const { deletions: _d, ...summary } = result;
  logger?.info(summary, result.interrupted ? 'gc: interrupted' : 'gc: finished');
  if (!dryRun) {
    // Where every server's metrics read it (berth_gc_last_run_*), whichever process ran gc.
    await writeGcLastRun(driver, {
      finishedAt: new Date().toISOString(),
      bytesFreed: result.bytesReclaimed,
      blobsDeleted: result.blobsDeleted,
      manifestsDeleted: result.manifestsDeleted,
      durationMs: result.durationMs,
      interrupted: result.interrupted,
      source: options.source ?? 'server',
    }).catch((err: unknown) => logger?.warn({ err }, 'gc: could not record the outcome in storage'));
  }
  return result;
}

/**
 * The events of a finished run (after manifests restored mid-run were taken out of `deletions`): `delete` of each
 * manifest revision, and of each blob in each repository whose link gc removed (blobs no repository linked, such as
 * manifest blobs, were never visible through the API and give no event). Upload data is not an event.
 */
export async function emitGcDeletions(events: EventSink, deletions: GcDeletion[]): Promise<void> {
  for (const d of deletions) {
    if (d.kind === 'manifest' && d.repository && d.digest) {
      await events.emit('delete', { repository: d.repository, digest: d.digest, kind: 'manifest' }, GC_CONTEXT);
    } else if (d.kind === 'blob' && d.digest) {
      for (const repository of d.links ?? []) await events.emit('delete', { repository, digest: d.digest, kind: 'blob' }, GC_CONTEXT);
    }
  }
}
