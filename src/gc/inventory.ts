import { tryParseDigest, type Digest } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES, parseManifest } from '../oci/manifest.js';
import { isNotFound, type StorageDriver } from '../storage/driver.js';
import { listOrEmpty, readLink, statOrNull } from '../storage/driver-utils.js';
import { basename, paths } from '../storage/paths.js';
import { repositoryNames } from '../storage/repositories.js';
import type { ProgressSink } from './progress.js';

/**
 * A read-only inventory of a registry:2-layout storage, built through the {@link StorageDriver} interface only
 * (so it works on every backend): repositories with their tags, manifest revisions, `_layers` links and referrer
 * links, the references of every manifest, and the blobs of the global store. Shared by `gc`, `du` and `fsck`.
 */

/** How many driver calls the housekeeping commands keep in flight. */
export const DEFAULT_CONCURRENCY = 16;

/** What a manifest references, as far as the housekeeping commands are concerned. */
export interface ManifestRefs {
  /**
   * `parsed`: a manifest or index berth understands; `scanned`: JSON berth does not parse (Docker schema 1, unknown
   * types): every digest-shaped string in it counts as a reference, so nothing it may use is ever collected;
   * `unreadable`: neither (not JSON, or too big); `missing`: no blob with this digest.
   */
  status: 'parsed' | 'scanned' | 'unreadable' | 'missing';
  /** Size of the manifest blob in bytes (0 when missing). */
  size: number;
  /** Blobs that must be in the registry: config and layers (for `scanned`, every digest found). */
  blobs: Digest[];
  /** Foreign layers (with `urls`): referenced, but they need not be in the registry. */
  foreign: Digest[];
  /** Manifests an index references (for `scanned`, every digest found). */
  children: Digest[];
  /** The `subject` of a referrer. */
  subject?: Digest;
}

/** One repository's links. Keys of the maps are digest values (`sha256:...`). */
export interface RepoInventory {
  name: string;
  /** tag → the digest its `current/link` names (null when the link is missing or unreadable). */
  tags: Map<string, Digest | null>;
  /** Manifest revisions whose link exists and names the digest of its path. */
  revisions: Map<string, Digest>;
  /** Revision directories whose link names another digest (fsck reports them); without a link they are ignored. */
  badRevisions: string[];
  /** `_layers/<alg>/<hex>` directories (their link files are read only when needed). */
  layers: Map<string, Digest>;
  /** `_referrers/subjects/<subject>/<referrer>` entries. */
  referrers: Array<{ subject: Digest; referrer: Digest }>;
  /** `_uploads/<id>` directories. */
  uploads: string[];
}

/** Everything about the repositories (blobs are listed separately by {@link listBlobs}). */
export interface Inventory {
  repositories: RepoInventory[];
  /** digest value → references, for every revision and tag target of every repository. */
  manifests: Map<string, ManifestRefs>;
}

/** Runs `fn` over `items` with at most `limit` calls in flight; rejects with the first error. */
export async function forEachLimit<T>(items: Iterable<T>, limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  const iterator = items[Symbol.iterator]();
  let failed: unknown;
  let hasFailed = false;
  const worker = async (): Promise<void> => {
    for (;;) {
      if (hasFailed) return;
      const next = iterator.next();
      if (next.done) return;
      try {
        await fn(next.value);
      } catch (err) {
        if (!hasFailed) {
          hasFailed = true;
          failed = err;
        }
        return;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, limit) }, worker));
  if (hasFailed) throw failed;
}

/** Digests stored as `<dir>/<alg>/<hex>` (the `_layers`, `revisions` and referrer shape). */
async function listDigestDirs(driver: StorageDriver, dir: string): Promise<Digest[]> {
  const out: Digest[] = [];
  for (const algDir of await listOrEmpty(driver, dir)) {
    for (const entry of await listOrEmpty(driver, algDir)) {
      const d = tryParseDigest(`${basename(algDir)}:${basename(entry)}`);
      if (d) out.push(d);
    }
  }
  return out;
}

/** Every repository name gc, fsck and du look at: all of them, with content or only uploads (the rule: paths.ts). */
export async function listRepositoryNames(driver: StorageDriver): Promise<string[]> {
  return repositoryNames(driver, () => true);
}

/** tag → the digest its `current/link` names (null when missing or unreadable). */
export async function readTags(driver: StorageDriver, name: string, concurrency = DEFAULT_CONCURRENCY): Promise<Map<string, Digest | null>> {
  const tags = new Map<string, Digest | null>();
  await forEachLimit(await listOrEmpty(driver, paths.tagsDir(name)), concurrency, async (dir) => {
    const tag = basename(dir);
    tags.set(tag, await readLink(driver, paths.tagCurrentLink(name, tag)));
  });
  return tags;
}

/** Tags and revisions of one repository: what the marking needs, re-read cheaply by gc's second pass. */
export async function scanRepositoryManifests(
  driver: StorageDriver,
  name: string,
  concurrency = DEFAULT_CONCURRENCY,
): Promise<Pick<RepoInventory, 'tags' | 'revisions' | 'badRevisions'>> {
  const tags = await readTags(driver, name, concurrency);
  const revisions = new Map<string, Digest>();
  const badRevisions: string[] = [];
  await forEachLimit(await listDigestDirs(driver, paths.revisionsDir(name)), concurrency, async (d) => {
    let content: string;
    try {
      content = (await driver.getContent(paths.revisionLink(name, d))).toString('utf8').trim();
    } catch (err) {
      // registry:2 deletes a manifest by removing the link file and leaves the directory: not a manifest.
      if (isNotFound(err)) return;
      throw err;
    }
    if (content === d.value) revisions.set(d.value, d);
    else badRevisions.push(d.value);
  });
  return { tags, revisions, badRevisions };
}

/** Scans one repository. */
export async function scanRepository(driver: StorageDriver, name: string, concurrency = DEFAULT_CONCURRENCY): Promise<RepoInventory> {
  const manifests = await scanRepositoryManifests(driver, name, concurrency);
  const layers = new Map<string, Digest>();
  for (const d of await listDigestDirs(driver, paths.layersDir(name))) layers.set(d.value, d);
  const referrers: RepoInventory['referrers'] = [];
  const subjectsRoot = `${paths.repository(name)}/_referrers/subjects`;
  for (const subject of await listDigestDirs(driver, subjectsRoot)) {
    for (const referrer of await listDigestDirs(driver, paths.referrersDir(name, subject))) referrers.push({ subject, referrer });
  }
  const uploads = await listOrEmpty(driver, paths.uploadsDir(name));
  return { name, ...manifests, layers, referrers, uploads };
}

/** Every digest-shaped string anywhere in a JSON value. */
function digestStrings(value: unknown, out: Map<string, Digest>): void {
  if (typeof value === 'string') {
    const d = tryParseDigest(value);
    if (d) out.set(d.value, d);
  } else if (Array.isArray(value)) {
    for (const v of value) digestStrings(v, out);
  } else if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) digestStrings(v, out);
  }
}

/** What a manifest's bytes reference (never throws). */
export function manifestRefs(bytes: Buffer): ManifestRefs {
  try {
    const p = parseManifest(bytes);
    const refs: ManifestRefs = {
      status: 'parsed',
      size: bytes.length,
      blobs: p.blobs.filter((b) => !(b.urls && b.urls.length > 0)).map((b) => b.digest),
      foreign: p.blobs.filter((b) => b.urls && b.urls.length > 0).map((b) => b.digest),
      children: p.children.map((c) => c.digest),
    };
    if (p.subject) refs.subject = p.subject.digest;
    return refs;
  } catch {
    // Not a manifest berth serves (e.g. Docker schema 1 written by registry:2): be conservative.
  }
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    return { status: 'unreadable', size: bytes.length, blobs: [], foreign: [], children: [] };
  }
  const found = new Map<string, Digest>();
  digestStrings(json, found);
  const all = [...found.values()];
  return { status: 'scanned', size: bytes.length, blobs: all, foreign: [], children: all };
}

/**
 * Reads and analyses the manifest blob `d`; when it is not in the blob store, from `fallback` (where gc keeps a
 * blob pending deletion) if given.
 */
export async function loadManifestRefs(driver: StorageDriver, d: Digest, fallback?: string): Promise<ManifestRefs> {
  const missing: ManifestRefs = { status: 'missing', size: 0, blobs: [], foreign: [], children: [] };
  for (const path of fallback ? [paths.blobData(d), fallback] : [paths.blobData(d)]) {
    const info = await statOrNull(driver, path);
    if (!info || info.isDir) continue;
    // Larger manifests are not read: registry:2 and berth refuse to store them.
    if (info.size > MAX_MANIFEST_BYTES) return { status: 'unreadable', size: info.size, blobs: [], foreign: [], children: [] };
    try {
      return manifestRefs(await driver.getContent(path));
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  return missing;
}

/** Loads the references of every digest in `digests` not yet in `into`. */
export async function loadManifests(
  driver: StorageDriver,
  digests: Iterable<Digest>,
  into: Map<string, ManifestRefs>,
  concurrency = DEFAULT_CONCURRENCY,
  onEach?: () => void,
  fallback?: (d: Digest) => string | undefined,
): Promise<void> {
  const todo = new Map<string, Digest>();
  for (const d of digests) if (!into.has(d.value)) todo.set(d.value, d);
  await forEachLimit(todo.values(), concurrency, async (d) => {
    into.set(d.value, await loadManifestRefs(driver, d, fallback?.(d)));
    onEach?.();
  });
}

/** Digests a repository's tags point at and its revisions: the manifests the marking reads. */
export function manifestDigestsOf(repo: Pick<RepoInventory, 'tags' | 'revisions'>): Digest[] {
  const out = [...repo.revisions.values()];
  for (const d of repo.tags.values()) if (d) out.push(d);
  return out;
}

/** Builds the inventory of all repositories. */
export async function scanInventory(driver: StorageDriver, options: { concurrency?: number; progress?: ProgressSink } = {}): Promise<Inventory> {
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  const names = await listRepositoryNames(driver);
  options.progress?.start('scanning repositories', names.length);
  const repositories: RepoInventory[] = [];
  await forEachLimit(names, Math.max(1, Math.floor(concurrency / 4)), async (name) => {
    repositories.push(await scanRepository(driver, name, concurrency));
    options.progress?.tick();
  });
  options.progress?.done();
  repositories.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const manifests = new Map<string, ManifestRefs>();
  const all = repositories.flatMap(manifestDigestsOf);
  options.progress?.start('reading manifests', new Set(all.map((d) => d.value)).size);
  await loadManifests(driver, all, manifests, concurrency, () => options.progress?.tick());
  options.progress?.done();
  return { repositories, manifests };
}

/** A blob directory of the global store. */
export interface BlobEntry {
  digest: Digest;
  /** `blobs/<alg>/<xx>/<hex>` */
  dir: string;
}

/** Every `blobs/<alg>/<xx>/<hex>` directory whose name is a digest berth knows (data may be missing). */
export async function listBlobs(driver: StorageDriver): Promise<BlobEntry[]> {
  const out: BlobEntry[] = [];
  for (const algDir of await listOrEmpty(driver, paths.blobsRoot)) {
    const alg = basename(algDir);
    for (const prefixDir of await listOrEmpty(driver, algDir)) {
      const prefix = basename(prefixDir);
      for (const dir of await listOrEmpty(driver, prefixDir)) {
        const d = tryParseDigest(`${alg}:${basename(dir)}`);
        if (d && d.hex.startsWith(prefix)) out.push({ digest: d, dir });
      }
    }
  }
  return out;
}
