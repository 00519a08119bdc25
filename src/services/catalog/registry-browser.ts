import type { Logger } from 'pino';
import { registryError } from '../../errors/registry-error.js';
import { tryParseDigest, type Digest } from '../../oci/digest.js';
import { assertName, isValidTag } from '../../oci/reference.js';
import type { Namespace } from '../../registry/repository.js';
import type { RequestContext } from '../../registry/request-context.js';
import type { StorageDriver } from '../../storage/driver.js';
import { listOrEmpty, statOrNull } from '../../storage/driver-utils.js';
import { basename, paths } from '../../storage/paths.js';
import { compareStrings, type RegistryStore } from '../../storage/registry-store.js';
import type { Browser, ImageDetail, RepositorySummary, TagSummary, Usage } from './browse.js';
import { CatalogIndex, DEFAULT_PAGE, MAX_PAGE } from './catalog-index.js';
import {
  boundedString,
  boundedStringList,
  boundedStringMap,
  isRecord,
  loadManifest,
  MAX_FIELD_ENTRIES,
  platformString,
  readConfig,
  tagPushedAt,
} from './image-facts.js';
import type { IndexEntry } from './repository-index.js';

/** Most untagged manifests listed for one repository. */
const MAX_UNTAGGED = 1000;
/** How long a computed usage report is reused (it walks all of storage). */
const USAGE_TTL_MS = 60_000;

/** What the browser needs besides storage. */
export interface RegistryBrowserDeps {
  store: RegistryStore;
  driver: StorageDriver;
  catalog: CatalogIndex;
  /**
   * Deletes go through the composed domain (src/compose.ts): locks and the catalog index
   * (src/services/catalog/indexing-namespace.ts), events and the audit trail (src/events/eventing-namespace.ts).
   */
  namespace: Pick<Namespace, 'stored' | 'deleteRepository'>;
  /** `storage.delete.enabled`. */
  deleteEnabled: boolean;
  /** `storage.readOnly`. */
  readOnly: boolean;
  /** The last scheduled gc run, when there is a schedule. */
  lastGc?: () => { at: Date; bytesFreed: number } | undefined;
  logger: Logger;
}

function summary(e: IndexEntry): RepositorySummary {
  return { name: e.name, tagCount: e.tagCount, size: e.size, lastPush: e.lastPush };
}

/** The {@link Browser} over berth's storage and catalog index. */
export class RegistryBrowser implements Browser {
  private usageCache: { at: number; value: Promise<Usage> } | undefined;

  constructor(private readonly deps: RegistryBrowserDeps) {}

  async listRepositories(opts: { q?: string; n?: number; last?: string; canPull: (repo: string) => Promise<boolean> }): Promise<{
    repositories: RepositorySummary[];
    next: string | null;
  }> {
    const n = Math.min(Math.max(opts.n ?? DEFAULT_PAGE, 0), MAX_PAGE);
    if (opts.q !== undefined && opts.q !== '') {
      // Search results are ranked, not lexical: `last` continues after that name in the ranking.
      const all = await this.deps.catalog.search(opts.q, opts.canPull);
      const start = opts.last === undefined ? 0 : all.findIndex((e) => e.name === opts.last) + 1;
      const page = all.slice(start, start + n);
      const more = start + n < all.length && page.length > 0;
      return { repositories: page.map(summary), next: more ? (page[page.length - 1] as IndexEntry).name : null };
    }
    const page = await this.deps.catalog.page(opts.last, n, opts.canPull);
    return { repositories: page.entries.map(summary), next: page.next };
  }

  private async requireRepository(repo: string): Promise<void> {
    assertName(repo);
    if (!(await this.deps.store.repositoryExists(repo))) throw registryError('NAME_UNKNOWN', { name: repo });
  }

  async listTags(repo: string, opts: { untagged?: boolean } = {}): Promise<TagSummary[]> {
    await this.requireRepository(repo);
    const { store, driver, catalog } = this.deps;
    const tags = (await listOrEmpty(driver, paths.tagsDir(repo))).map(basename);
    const out: TagSummary[] = [];
    const tagged = new Set<string>();
    for (let i = 0; i < tags.length; i += 32) {
      await Promise.all(
        tags.slice(i, i + 32).map(async (tag) => {
          const d = await store.resolveTag(repo, tag);
          if (!d) return;
          const [f, at] = await Promise.all([catalog.facts(repo, d), tagPushedAt(driver, repo, tag)]);
          if (!f) return;
          for (const part of f.parts.keys()) tagged.add(part);
          out.push({
            name: tag,
            digest: f.digest,
            mediaType: f.mediaType,
            size: f.size,
            platforms: [...f.platforms],
            created: f.created,
            pushed: at ? at.toISOString() : null,
          });
        }),
      );
    }
    if (opts.untagged) {
      const algDirs = await listOrEmpty(driver, paths.revisionsDir(repo));
      let found = 0;
      for (const algDir of algDirs) {
        for (const entry of await listOrEmpty(driver, algDir)) {
          if (found >= MAX_UNTAGGED) break;
          const d = tryParseDigest(`${basename(algDir)}:${basename(entry)}`);
          if (!d || tagged.has(d.value)) continue;
          const m = await loadManifest(store, repo, d);
          // Referrers (signatures, SBOMs) are untagged by design: they belong to their subject, not dangling.
          if (!m || m.parsed.subject) continue;
          const f = await catalog.facts(repo, d);
          if (!f) continue;
          const info = await statOrNull(driver, paths.revisionLink(repo, d));
          found++;
          out.push({
            name: '',
            digest: f.digest,
            mediaType: f.mediaType,
            size: f.size,
            platforms: [...f.platforms],
            created: f.created,
            pushed: info ? info.modTime.toISOString() : null,
          });
        }
      }
    }
    // Newest push first; ties (and unknown times) by name, then digest.
    return out.sort((a, b) => compareStrings(b.pushed ?? '', a.pushed ?? '') || compareStrings(a.name, b.name) || compareStrings(a.digest, b.digest));
  }

  private async resolve(repo: string, reference: string): Promise<Digest> {
    const notFound = () => registryError('MANIFEST_UNKNOWN', { name: repo, reference: reference.slice(0, 300) });
    if (reference.includes(':')) {
      const d = tryParseDigest(reference);
      if (!d) throw registryError('DIGEST_INVALID', { reference: reference.slice(0, 300) });
      return d;
    }
    if (!isValidTag(reference)) throw notFound();
    const d = await this.deps.store.resolveTag(repo, reference);
    if (!d) throw notFound();
    return d;
  }

  async getImage(repo: string, reference: string): Promise<ImageDetail> {
    assertName(repo);
    const { store, driver } = this.deps;
    const d = await this.resolve(repo, reference);
    const m = await loadManifest(store, repo, d);
    if (!m) throw registryError('MANIFEST_UNKNOWN', { name: repo, reference: reference.slice(0, 300) });
    const detail: ImageDetail = {
      name: repo,
      reference,
      digest: d.value,
      mediaType: m.parsed.mediaType,
      size: m.bytes.length,
      manifest: m.body,
      config: null,
      layers: [],
      children: [],
      referrers: [],
    };
    if (m.parsed.isIndex) {
      const raw = Array.isArray(m.body.manifests) ? m.body.manifests : [];
      detail.children = m.parsed.children.slice(0, MAX_FIELD_ENTRIES).map((c, i) => ({
        digest: c.digest.value,
        mediaType: c.mediaType,
        platform: platformString(isRecord(raw[i]) ? (raw[i] as Record<string, unknown>).platform : undefined),
        size: c.size,
      }));
      detail.size += m.parsed.children.reduce((a, c) => a + c.size, 0);
    } else {
      const [configDesc, ...layers] = m.parsed.blobs;
      detail.layers = layers.map((l) => ({ digest: l.digest.value, mediaType: l.mediaType, size: l.size }));
      detail.size += m.parsed.blobs.reduce((a, b) => a + b.size, 0);
      const config = configDesc ? await readConfig(driver, configDesc.digest) : null;
      if (config)
        detail.config = imageConfig(
          config,
          layers.map((l) => l.size),
        );
    }
    const referrers = await store.referrers(repo, d);
    detail.referrers = referrers.slice(0, MAX_FIELD_ENTRIES).map((r) => ({
      digest: r.digest,
      artifactType: boundedString(r.artifactType) ?? '',
      mediaType: r.mediaType,
      size: r.size,
      annotations: boundedStringMap(r.annotations),
    }));
    return detail;
  }

  private checkDeletable(): void {
    if (this.deps.readOnly) throw registryError('UNSUPPORTED', undefined, { message: 'registry is in read-only mode' });
    if (!this.deps.deleteEnabled) throw registryError('UNSUPPORTED', undefined, { message: 'deletes are disabled (storage.delete.enabled)' });
  }

  async deleteTag(repo: string, tag: string, ctx: RequestContext): Promise<void> {
    assertName(repo);
    this.checkDeletable();
    if (!isValidTag(tag)) throw registryError('MANIFEST_UNKNOWN', { name: repo, reference: tag.slice(0, 300) });
    const deleted = await this.deps.namespace.stored(repo, ctx).tags.delete(tag);
    if (!deleted) throw registryError('MANIFEST_UNKNOWN', { name: repo, reference: tag });
  }

  async deleteManifest(repo: string, digest: string, ctx: RequestContext): Promise<void> {
    assertName(repo);
    this.checkDeletable();
    const d = tryParseDigest(digest);
    if (!d) throw registryError('DIGEST_INVALID', { reference: digest.slice(0, 300) });
    const deleted = await this.deps.namespace.stored(repo, ctx).manifests.delete(d);
    if (!deleted) throw registryError('MANIFEST_UNKNOWN', { name: repo, reference: digest });
  }

  async deleteRepository(repo: string, ctx: RequestContext): Promise<void> {
    assertName(repo);
    this.checkDeletable();
    await this.deps.namespace.deleteRepository(repo, ctx);
    this.deps.logger.info({ repository: repo }, 'repository deleted');
  }

  async usage(): Promise<Usage> {
    const now = Date.now();
    if (!this.usageCache || now - this.usageCache.at > USAGE_TTL_MS) {
      const value = this.computeUsage();
      this.usageCache = { at: now, value };
      value.catch(() => (this.usageCache = undefined));
    }
    return this.usageCache.value;
  }

  private async computeUsage(): Promise<Usage> {
    const { diskUsage } = await import('../../gc/usage.js');
    const report = await diskUsage(this.deps.driver);
    const last = this.deps.lastGc?.();
    return {
      repositories: report.repositories.map((r) => ({ name: r.repository, size: r.bytes, shared: r.sharedBytes })),
      total: report.totals.storedBytes,
      reclaimable: report.reclaimable.gc.bytes,
      lastGc: last ? { at: last.at.toISOString(), bytesFreed: last.bytesFreed } : null,
    };
  }
}

/** The parts of an image config the API shows, bounded. `layerSizes` pairs history entries with layer sizes. */
function imageConfig(config: Record<string, unknown>, layerSizes: number[]): NonNullable<ImageDetail['config']> {
  const inner = isRecord(config.config) ? config.config : {};
  const history = Array.isArray(config.history) ? config.history.slice(0, MAX_FIELD_ENTRIES) : [];
  let layer = 0;
  return {
    created: boundedString(config.created, 64),
    os: boundedString(config.os, 64),
    architecture: boundedString(config.architecture, 64),
    variant: boundedString(config.variant, 64),
    env: boundedStringList(inner.Env) ?? [],
    entrypoint: boundedStringList(inner.Entrypoint),
    cmd: boundedStringList(inner.Cmd),
    labels: boundedStringMap(inner.Labels),
    history: history.map((h) => {
      const entry = isRecord(h) ? h : {};
      const emptyLayer = entry.empty_layer === true;
      const size = emptyLayer ? null : (layerSizes[layer++] ?? null);
      return { created: boundedString(entry.created, 64), createdBy: boundedString(entry.created_by) ?? '', emptyLayer, size };
    }),
  };
}
