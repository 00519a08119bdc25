import type { StorageDriver } from '../storage/driver.js';
import { paths } from '../storage/paths.js';
import { DEFAULT_GRACE_MS, DEFAULT_UPLOAD_AGE_MS, findBlobCandidates, findStaleUploads, markInventory } from './collector.js';
import { statOrNull } from '../storage/driver-utils.js';
import { DEFAULT_CONCURRENCY, forEachLimit, listBlobs, scanInventory } from './inventory.js';
import { formatBytes, noProgress, type ProgressSink } from './progress.js';

/** Space used by one repository. */
export interface RepositoryUsage {
  repository: string;
  tags: number;
  /** Manifest revisions. */
  manifests: number;
  /** Distinct blobs its manifests use (manifest blobs, configs, layers) that are present. */
  blobs: number;
  /** Their total size. */
  bytes: number;
  /** Bytes of blobs no other repository's manifests use. */
  uniqueBytes: number;
  /** Bytes of blobs other repositories' manifests use too. */
  sharedBytes: number;
}

/** What a gc would reclaim. */
export interface Reclaimable {
  blobs: number;
  /** Blob bytes plus stale upload bytes. */
  bytes: number;
  /** Untagged manifests it would delete (only with --delete-untagged). */
  manifests: number;
}

/** The result of {@link diskUsage}. */
export interface UsageReport {
  repositories: RepositoryUsage[];
  totals: {
    repositories: number;
    tags: number;
    manifests: number;
    /** Every blob in the global store. */
    blobs: number;
    storedBytes: number;
    /** Blobs some manifest of some repository uses. */
    referencedBytes: number;
    uploads: number;
    uploadBytes: number;
  };
  /** What `berth gc` (same grace) would reclaim, and `berth gc --delete-untagged`. */
  reclaimable: { gc: Reclaimable; deleteUntagged: Reclaimable };
  graceMs: number;
}

/** Measures the registry, like `docker system df`, and what a gc would reclaim (computed as a dry run would). */
export async function diskUsage(
  driver: StorageDriver,
  options: { graceMs?: number; uploadAgeMs?: number; concurrency?: number; progress?: ProgressSink } = {},
): Promise<UsageReport> {
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  const progress = options.progress ?? noProgress;
  const inv = await scanInventory(driver, { concurrency, progress });
  const blobs = await listBlobs(driver);
  const sizes = new Map<string, number>();
  progress.start('measuring blobs', blobs.length);
  await forEachLimit(blobs, concurrency, async (b) => {
    const info = await statOrNull(driver, paths.blobData(b.digest));
    if (info && !info.isDir) sizes.set(b.digest.value, info.size);
    progress.tick();
  });
  progress.done();

  const used = new Map<string, Set<string>>();
  const usersOf = new Map<string, number>();
  for (const repo of inv.repositories) {
    const set = new Set<string>();
    const add = (d: string) => {
      if (sizes.has(d)) set.add(d);
    };
    for (const d of [...repo.revisions.values(), ...[...repo.tags.values()].filter((x) => x !== null)]) {
      add(d.value);
      const refs = inv.manifests.get(d.value);
      for (const b of [...(refs?.blobs ?? []), ...(refs?.foreign ?? [])]) add(b.value);
    }
    used.set(repo.name, set);
    for (const d of set) usersOf.set(d, (usersOf.get(d) ?? 0) + 1);
  }
  const repositories: RepositoryUsage[] = inv.repositories.map((repo) => {
    const set = used.get(repo.name) ?? new Set<string>();
    let bytes = 0;
    let uniqueBytes = 0;
    for (const d of set) {
      const size = sizes.get(d) ?? 0;
      bytes += size;
      if ((usersOf.get(d) ?? 0) <= 1) uniqueBytes += size;
    }
    return {
      repository: repo.name,
      tags: [...repo.tags.values()].filter((d) => d !== null).length,
      manifests: repo.revisions.size,
      blobs: set.size,
      bytes,
      uniqueBytes,
      sharedBytes: bytes - uniqueBytes,
    };
  });

  const uploadAgeMs = Math.max(graceMs, options.uploadAgeMs ?? DEFAULT_UPLOAD_AGE_MS);
  const staleUploads = await findStaleUploads(driver, inv, uploadAgeMs);
  const staleUploadBytes = staleUploads.reduce((n, u) => n + u.bytes, 0);
  const reclaim = async (deleteUntagged: boolean): Promise<Reclaimable> => {
    const { marker, unkept } = await markInventory(driver, inv, { deleteUntagged, graceMs, concurrency });
    const { candidates } = await findBlobCandidates(driver, inv, marker, blobs, { graceMs, concurrency });
    return {
      blobs: candidates.length,
      bytes: candidates.reduce((n, c) => n + c.size, 0) + staleUploadBytes,
      manifests: unkept.length,
    };
  };
  let uploads = 0;
  let uploadBytes = 0;
  for (const repo of inv.repositories) {
    for (const dir of repo.uploads) {
      const data = await statOrNull(driver, `${dir}/data`);
      // An empty folder is not an upload: berth keeps completed uploads' folders for the next ones (upload-data-store.ts).
      if (!data && !(await statOrNull(driver, `${dir}/startedat`))) continue;
      uploads++;
      uploadBytes += data?.size ?? 0;
    }
  }
  return {
    repositories,
    totals: {
      repositories: repositories.length,
      tags: repositories.reduce((n, r) => n + r.tags, 0),
      manifests: repositories.reduce((n, r) => n + r.manifests, 0),
      blobs: sizes.size,
      storedBytes: [...sizes.values()].reduce((n, s) => n + s, 0),
      referencedBytes: [...usersOf.keys()].reduce((n, d) => n + (sizes.get(d) ?? 0), 0),
      uploads,
      uploadBytes,
    },
    reclaimable: { gc: await reclaim(false), deleteUntagged: await reclaim(true) },
    graceMs,
  };
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Renders a report as a table for a terminal. */
export function formatUsage(report: UsageReport): string {
  const header = ['REPOSITORY', 'TAGS', 'MANIFESTS', 'SIZE', 'UNIQUE', 'SHARED'];
  const rows = report.repositories.map((r) => [
    r.repository,
    String(r.tags),
    String(r.manifests),
    formatBytes(r.bytes),
    formatBytes(r.uniqueBytes),
    formatBytes(r.sharedBytes),
  ]);
  const t = report.totals;
  const footer = ['TOTAL', String(t.tags), String(t.manifests), formatBytes(t.referencedBytes), '', ''];
  const all = [header, ...rows, footer];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  const pct = (n: number) => (t.storedBytes > 0 ? ` (${Math.round((n / t.storedBytes) * 100)}%)` : '');
  const g = report.reclaimable;
  return [
    line(header),
    ...rows.map(line),
    line(footer),
    '',
    `Stored:       ${formatBytes(t.storedBytes)} in ${plural(t.blobs, 'blob')} across ${plural(t.repositories, 'repository', 'repositories')}`,
    `Uploads:      ${t.uploads} in progress or abandoned (${formatBytes(t.uploadBytes)})`,
    `Reclaimable:  ${formatBytes(g.gc.bytes)}${pct(g.gc.bytes)} by berth gc (${plural(g.gc.blobs, 'blob')})`,
    `              ${formatBytes(g.deleteUntagged.bytes)}${pct(g.deleteUntagged.bytes)} by berth gc --delete-untagged (${plural(g.deleteUntagged.blobs, 'blob')}, ${plural(g.deleteUntagged.manifests, 'untagged manifest')})`,
    '',
  ].join('\n');
}
