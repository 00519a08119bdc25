import type { Readable } from 'node:stream';
import { registryError } from '../errors/registry-error.js';
import { digestOf, tryParseDigest, type Digest } from '../oci/digest.js';
import { parseManifest, referrerArtifactType, type ParsedManifest } from '../oci/manifest.js';
import { presentOrRestored } from './pending.js';
import { isNotFound, type StorageDriver } from './driver.js';
import { CachingDriver, DerivedCache } from './link-cache.js';
import { deleteIfPresent, listOrEmpty, readLink, statOrNull } from './driver-utils.js';
import { basename, paths } from './paths.js';
import { enumerateRepositories, repositoryNames } from './repositories.js';

/** A manifest as served: its bytes, its digest and the media type its body declares. */
export interface StoredManifest {
  bytes: Buffer;
  digest: Digest;
  mediaType: string;
}

/** A referrer as listed by the referrers API: a descriptor of a manifest whose `subject` is the queried digest. */
export interface ReferrerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** How many link files a listing reads in parallel. */
const LINK_READS_AT_ONCE = 64;

/** Size cap of the in-memory manifest cache (content-addressed, so entries never go stale). */
const MANIFEST_CACHE_BYTES = 32 * 1024 * 1024;

/**
 * Repositories, blobs, manifests, tags and referrers on top of a {@link StorageDriver}, in registry:2's layout
 * (see `paths.ts`). Stateless apart from a content-addressed manifest cache, so several instances can share one
 * storage: every link is read from storage on every request.
 */
export class RegistryStore {
  private readonly manifestCache = new Map<string, { bytes: Buffer; parsed: ParsedManifest }>();
  private manifestCacheBytes = 0;

  /**
   * This store reading storage directly, bypassing a link cache in front of `driver` (src/storage/link-cache.ts):
   * what a push is checked against (are its blobs and children there?) must be what storage holds this instant,
   * as garbage collection in another process may just have removed it.
   */
  private readonly fresh: RegistryStore;

  /** A tag's manifest by repository and tag, while the two links it was read from are unchanged (link cache on). */
  private readonly taggedManifests: DerivedCache<StoredManifest> | undefined;

  constructor(readonly driver: StorageDriver) {
    const cached = driver instanceof CachingDriver && driver.serveFromCache;
    this.fresh = cached ? new RegistryStore(driver.uncachedReads()) : this;
    // The manifests kept by tag hold their bytes: bounded like the manifest cache, whose entries they may outlive.
    if (cached) this.taggedManifests = new DerivedCache(driver.cache, { weigh: (m) => m.bytes.length, maxWeight: MANIFEST_CACHE_BYTES });
  }

  // ---- links -------------------------------------------------------------------------------------------------

  private async writeLink(path: string, d: Digest): Promise<void> {
    await this.driver.putContent(path, Buffer.from(d.value));
  }

  // ---- blobs -------------------------------------------------------------------------------------------------

  /** Size of a blob in the global store, or null when absent. */
  async blobSize(d: Digest): Promise<number | null> {
    const info = await statOrNull(this.driver, paths.blobData(d));
    return info && !info.isDir ? info.size : null;
  }

  /** Size of a blob if it is linked into `repo` and present, else null. */
  async repositoryBlobSize(repo: string, d: Digest): Promise<number | null> {
    const link = await readLink(this.driver, paths.layerLink(repo, d));
    if (!link || link.value !== d.value) return null;
    return this.blobSize(d);
  }

  async openBlob(d: Digest, offset?: number, length?: number): Promise<Readable> {
    return this.driver.reader(paths.blobData(d), offset, length);
  }

  async blobRedirectURL(d: Digest, method: 'GET' | 'HEAD', expiresInSeconds: number): Promise<string | null> {
    return this.driver.redirectURL(paths.blobData(d), { method, expiresInSeconds });
  }

  /** Makes an existing blob part of `repo` (after an upload or a mount). */
  async linkBlob(repo: string, d: Digest): Promise<void> {
    await this.writeLink(paths.layerLink(repo, d), d);
  }

  /** Removes a blob from `repo` (the bytes stay until garbage collection). False when it was not linked. */
  async unlinkBlob(repo: string, d: Digest): Promise<boolean> {
    if (!(await readLink(this.driver, paths.layerLink(repo, d)))) return false;
    return deleteIfPresent(this.driver, paths.layerLinkDir(repo, d));
  }

  // ---- manifests ---------------------------------------------------------------------------------------------

  private remember(d: Digest, bytes: Buffer, parsed: ParsedManifest): void {
    if (bytes.length > MANIFEST_CACHE_BYTES / 16 || this.manifestCache.has(d.value)) return;
    this.manifestCache.set(d.value, { bytes, parsed });
    this.manifestCacheBytes += bytes.length;
    for (const [key, entry] of this.manifestCache) {
      if (this.manifestCacheBytes <= MANIFEST_CACHE_BYTES) break;
      this.manifestCache.delete(key);
      this.manifestCacheBytes -= entry.bytes.length;
    }
  }

  /** Reads and parses manifest content by digest from the global blob store (null when absent). */
  private async loadManifest(d: Digest): Promise<{ bytes: Buffer; parsed: ParsedManifest } | null> {
    const cached = this.manifestCache.get(d.value);
    if (cached) return cached;
    let bytes: Buffer;
    try {
      bytes = await this.driver.getContent(paths.blobData(d));
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
    let parsed: ParsedManifest;
    try {
      parsed = parseManifest(bytes);
    } catch {
      return null;
    }
    this.remember(d, bytes, parsed);
    return { bytes, parsed };
  }

  /** The digest a tag points at, or null. */
  async resolveTag(repo: string, tag: string): Promise<Digest | null> {
    return readLink(this.driver, paths.tagCurrentLink(repo, tag));
  }

  async hasManifest(repo: string, d: Digest): Promise<boolean> {
    const link = await readLink(this.driver, paths.revisionLink(repo, d));
    return link !== null && link.value === d.value;
  }

  /**
   * The manifest `tag` of `repo` points at, or null: {@link resolveTag} then {@link getManifest}. With the link
   * cache on, the answer is kept while both links stay unchanged and fresh in it (the manifest GET by tag every
   * pull starts with, answered without re-reading them).
   */
  async manifestByTag(repo: string, tag: string): Promise<StoredManifest | null> {
    const memo = this.taggedManifests;
    const hit = memo?.get(repo, tag);
    if (hit) return hit;
    const token = memo?.begin();
    const d = await this.resolveTag(repo, tag);
    const m = d ? await this.getManifest(repo, d) : null;
    if (memo && m && token !== undefined) memo.set(repo, tag, m, token, [paths.tagCurrentLink(repo, tag), paths.revisionLink(repo, m.digest)]);
    return m;
  }

  /** A manifest of `repo` by digest, or null when the repository does not have it. */
  async getManifest(repo: string, d: Digest): Promise<StoredManifest | null> {
    if (!(await this.hasManifest(repo, d))) return null;
    const m = await this.loadManifest(d);
    return m ? { bytes: m.bytes, digest: d, mediaType: m.parsed.mediaType } : null;
  }

  /**
   * Stores a manifest and, when `tag` is given, points the tag at it.
   *
   * Spec: "If a manifest references blobs or manifests that do not exist in the repository, the registry MUST
   * respond with MANIFEST_BLOB_UNKNOWN" -- except for foreign layers, which carry `urls` and live elsewhere.
   * Spec: a manifest with a `subject` is accepted whether or not the subject exists, and is indexed as a referrer.
   */
  async putManifest(
    repo: string,
    bytes: Buffer,
    options: { contentType?: string; tag?: string; digest?: Digest },
  ): Promise<{ digest: Digest; parsed: ParsedManifest }> {
    const parsed = parseManifest(bytes, options.contentType);
    const digest = options.digest ? digestOf(bytes, options.digest.algorithm) : digestOf(bytes);
    if (options.digest && digest.value !== options.digest.value) {
      throw registryError('DIGEST_INVALID', { expected: options.digest.value, computed: digest.value });
    }
    const fresh = this.fresh;
    const missing = new Set<string>();
    // Each distinct reference is checked once, a bounded number at once: a manifest may list thousands of
    // descriptors (the same layer over and over), and one open link file each would exhaust the process's file
    // descriptors for every request (EMFILE).
    const checks = new Map<string, () => Promise<void>>();
    for (const b of parsed.blobs) {
      if (b.urls && b.urls.length > 0) continue;
      checks.set(`blob ${b.digest.value}`, async () => {
        // A blob a running gc has set aside is put back rather than reported missing (src/gc/pending.ts).
        const found = await presentOrRestored(fresh.driver, b.digest, async () => (await fresh.repositoryBlobSize(repo, b.digest)) !== null);
        if (!found) missing.add(b.digest.value);
      });
    }
    for (const c of parsed.children) {
      checks.set(`manifest ${c.digest.value}`, async () => {
        const found = await presentOrRestored(fresh.driver, c.digest, async () => (await fresh.blobSize(c.digest)) !== null);
        if (!(await fresh.hasManifest(repo, c.digest)) || !found) missing.add(c.digest.value);
      });
    }
    const pending = [...checks.values()];
    for (let i = 0; i < pending.length; i += LINK_READS_AT_ONCE) {
      await Promise.all(pending.slice(i, i + LINK_READS_AT_ONCE).map((check) => check()));
    }
    if (missing.size > 0) throw registryError('MANIFEST_BLOB_UNKNOWN', { digests: [...missing].sort() });

    if ((await this.blobSize(digest)) !== bytes.length) await this.driver.putContent(paths.blobData(digest), bytes);
    await this.writeLink(paths.revisionLink(repo, digest), digest);
    if (parsed.subject) await this.writeLink(paths.referrerLink(repo, parsed.subject.digest, digest), digest);
    if (options.tag) {
      await this.writeLink(paths.tagIndexLink(repo, options.tag, digest), digest);
      await this.writeLink(paths.tagCurrentLink(repo, options.tag), digest);
    }
    this.remember(digest, bytes, parsed);
    return { digest, parsed };
  }

  /**
   * Deletes a manifest revision from `repo`, every tag that points at it and its referrer entry.
   * Returns false when the repository does not have it. The tags removed are appended to `removedTags` (for events).
   */
  async deleteManifest(repo: string, d: Digest, removedTags?: string[]): Promise<boolean> {
    if (!(await this.hasManifest(repo, d))) return false;
    const m = await this.loadManifest(d);
    for (const tag of await this.listTagNames(repo)) {
      const current = await this.resolveTag(repo, tag);
      if (current && current.value === d.value && (await deleteIfPresent(this.driver, paths.tagDir(repo, tag)))) removedTags?.push(tag);
    }
    if (m?.parsed.subject) await deleteIfPresent(this.driver, paths.referrerDir(repo, m.parsed.subject.digest, d));
    return deleteIfPresent(this.driver, paths.revisionDir(repo, d));
  }

  /** Removes a tag (the manifest stays). False when there was no such tag. */
  async deleteTag(repo: string, tag: string): Promise<boolean> {
    if (!(await this.resolveTag(repo, tag))) return false;
    return deleteIfPresent(this.driver, paths.tagDir(repo, tag));
  }

  // ---- listing -----------------------------------------------------------------------------------------------

  private async listTagNames(repo: string): Promise<string[]> {
    return (await listOrEmpty(this.driver, paths.tagsDir(repo))).map(basename);
  }

  /** Tags of `repo` in lexical order, or null when the repository is unknown. */
  async listTags(repo: string): Promise<string[] | null> {
    let entries: string[];
    try {
      entries = await this.driver.list(paths.tagsDir(repo));
    } catch (err) {
      if (!isNotFound(err)) throw err;
      return (await this.repositoryExists(repo)) ? [] : null;
    }
    const tags: string[] = [];
    // A bounded number of links at once: one open file per tag of a repository with tens of thousands of tags runs
    // out of file descriptors (EMFILE).
    for (let i = 0; i < entries.length; i += LINK_READS_AT_ONCE) {
      await Promise.all(
        entries.slice(i, i + LINK_READS_AT_ONCE).map(async (p) => {
          const tag = basename(p);
          if (await this.resolveTag(repo, tag)) tags.push(tag);
        }),
      );
    }
    return tags.sort(compareStrings);
  }

  /**
   * A repository is what the catalog lists: a directory that holds `_manifests` or `_layers`. The parent directory
   * of a nested repository (`library` of `library/app`), or one with only unfinished uploads, is not one.
   */
  async repositoryExists(repo: string): Promise<boolean> {
    const names = (await listOrEmpty(this.driver, paths.repository(repo))).map(basename);
    return names.includes('_manifests') || names.includes('_layers');
  }

  /** Every repository name the catalog lists, in lexical order (the rule and the walk: paths.ts, repositories.ts). */
  async listRepositories(): Promise<string[]> {
    return repositoryNames(this.driver, (e) => e.content);
  }

  /**
   * One catalog page: at most `n` (undefined: all) names after `last`, and whether more follow. The walk starts
   * after `last` and stops once the page is full, so a page does not read the whole tree.
   */
  async catalogPage(page: { n?: number; last?: string }): Promise<{ names: string[]; more: boolean }> {
    const names: string[] = [];
    for await (const e of enumerateRepositories(this.driver, page.last !== undefined ? { startAfter: page.last } : {})) {
      if (!e.content) continue;
      if (page.n !== undefined && names.length >= page.n) return { names, more: true };
      names.push(e.name);
    }
    return { names, more: false };
  }

  /** Manifests of `repo` whose subject is `subject`, optionally only those of one artifact type. */
  async referrers(repo: string, subject: Digest, artifactType?: string): Promise<ReferrerDescriptor[]> {
    const out: ReferrerDescriptor[] = [];
    const algDirs = await listOrEmpty(this.driver, paths.referrersDir(repo, subject));
    for (const algDir of algDirs) {
      for (const entry of await listOrEmpty(this.driver, algDir)) {
        const d = tryParseDigest(`${basename(algDir)}:${basename(entry)}`);
        if (!d || !(await this.hasManifest(repo, d))) continue;
        const m = await this.loadManifest(d);
        if (!m) continue;
        const type = referrerArtifactType(m.parsed);
        if (artifactType !== undefined && type !== artifactType) continue;
        const desc: ReferrerDescriptor = { mediaType: m.parsed.mediaType, digest: d.value, size: m.bytes.length };
        if (type !== undefined) desc.artifactType = type;
        if (m.parsed.annotations) desc.annotations = m.parsed.annotations;
        out.push(desc);
      }
    }
    return out.sort((a, b) => compareStrings(a.digest, b.digest));
  }
}

/** Byte-wise lexical order (what the spec's "lexical order" means for ASCII names and tags). */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
