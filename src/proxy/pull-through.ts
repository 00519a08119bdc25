import type { Logger } from 'pino';
import { RegistryError, registryError } from '../errors/registry-error.js';
import { digestOf, tryParseDigest, type Digest } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES, MediaTypes, parseManifest } from '../oci/manifest.js';
import type { Reference } from '../oci/reference.js';
import { storedBlob } from '../registry/local.js';
import type {
  BlobContent,
  BlobStore,
  ManifestStore,
  Namespace,
  ReferrerDescriptor,
  Repository,
  StoredManifest,
  TagList,
  TagPage,
  TagStore,
} from '../registry/repository.js';
import { canRecycleBuffers, isNotFound, type StorageDriver } from '../storage/driver.js';
import { paths } from '../storage/paths.js';
import type { RegistryStore } from '../storage/registry-store.js';
import { BlobFill, toClientError } from './blob-fill.js';
import { LocalFillCoordinator, type FillCoordinator } from './fill-coordinator.js';
import type { ProxySettings, UpstreamSettings } from './config.js';
import { cacheMarkerPath, expireCachedContent, type ExpiryResult } from './expiry.js';
import { Router, type MirrorTarget } from './routing.js';
import { MirrorStats, type MirrorCounts } from './mirror-observer.js';
import { UpstreamClient, UpstreamError, type UpstreamAnswer, type UpstreamState } from './upstream.js';
import { Transform } from 'node:stream';

/** The pull-through cache as the app sees it. */
export interface PullThrough {
  /**
   * The namespace of `local` with mirrored repositories served through the cache: manifests, blobs, tags and
   * referrers are read locally first, then from the upstream; writes are refused with UNSUPPORTED. Repositories no
   * upstream mirrors are `local`'s.
   */
  decorate(local: Namespace): Namespace;
  /** Removes cached content not pulled within its TTL now (the background task calls this every `expiryinterval`). */
  expire(now?: number): Promise<ExpiryResult>;
  /**
   * Each upstream's state (reachable, degraded, down since ...) and what its cache did since start (hits, misses,
   * bytes, errors, fills): the one view `/readyz`, the UI's mirror page and the metrics read. Read-only.
   */
  upstreams(): MirrorUpstreamStatus[];
  /** Starts the background expiry. */
  start(): void;
  /** Stops the background expiry and aborts in-flight upstream downloads. */
  close(): Promise<void>;
  /** The upstream a plain repository name (no `?ns=`) is mirrored from, or null when it is local. */
  upstreamOf(name: string): string | null;
}

/** What the cache is built on. */
export interface PullThroughDeps {
  store: RegistryStore;
  driver: StorageDriver;
  logger: Logger;
  /** Called after a manifest (and its tag) was cached into `localName`: the catalog index refreshes that entry. */
  onCached?: (localName: string) => void;
  /**
   * Decides which process fetches a blob (default: this one; with Redis, one process across the replicas sharing the
   * storage while the others follow its fill). Closed by {@link PullThrough.close}.
   */
  coordinator?: FillCoordinator;
}

/** One upstream as {@link PullThrough.upstreams} reports it: its state, and its counts since start. */
export interface MirrorUpstreamStatus extends UpstreamState {
  /** Local name prefix of its cached repositories ('' for the default upstream). */
  prefix: string;
  counts: MirrorCounts;
}

/** Every manifest type berth stores, asked for from upstreams (so tags resolve to the same digest everywhere). */
const MANIFEST_ACCEPT = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerManifestList, MediaTypes.dockerManifest].join(', ');

interface CachedManifest {
  bytes: Buffer;
  digest: Digest;
  mediaType: string;
  /** True when this answer came from the upstream (a cache miss). */
  fetched?: boolean;
}

/**
 * The pull-through cache (see `routing.ts` for which requests it answers and where it keeps content):
 * - manifests by digest are immutable: served from the cache once fetched;
 * - manifests by tag: served from the cache while the tag was validated within `tagttl`; after that a HEAD asks
 *   the upstream for the tag's digest (HEADs don't count against Docker Hub's pull limit) and only a changed digest
 *   is fetched;
 * - blobs: the first request starts a {@link BlobFill} that writes the blob once into storage's upload area and
 *   streams it from there to every concurrent client while it is written and verified (with a shared
 *   {@link FillCoordinator}, other replicas follow that fill instead of fetching); later requests are served from
 *   storage;
 * - single-flight: concurrent requests for the same uncached manifest, tag check or blob share one upstream request;
 * - stale-if-error: when the upstream fails (network, timeout, 429, 5xx), cached tags and content are served as
 *   they are; content never cached gets UNAVAILABLE (or the upstream's 404 as *_UNKNOWN).
 */
export class PullThroughCache implements PullThrough {
  private readonly router: Router;
  private readonly clients = new Map<string, UpstreamClient>();
  private readonly fills = new Map<string, BlobFill>();
  private readonly flights = new Map<string, Promise<unknown>>();
  private readonly touched = new Map<string, number>();
  private readonly marked = new Set<string>();
  private expiryTimer: NodeJS.Timeout | undefined;
  private expiring: Promise<unknown> | undefined;
  private readonly logger: Logger;

  constructor(
    private readonly settings: ProxySettings,
    private readonly deps: PullThroughDeps,
  ) {
    this.logger = deps.logger.child({ component: 'proxy' });
    this.router = new Router(settings);
    this.coordinator = deps.coordinator ?? new LocalFillCoordinator();
    for (const u of settings.upstreams) this.clients.set(u.name, new UpstreamClient(u, this.logger, this.observer));
  }

  private readonly coordinator: FillCoordinator;

  /** Every report of the cache and its upstream clients is counted here, once. */
  private readonly observer = new MirrorStats();

  upstreams(): MirrorUpstreamStatus[] {
    return this.settings.upstreams.map((u) => ({
      ...this.client(u).health.snapshot(u.name, u.url),
      prefix: u.isDefault ? '' : u.prefix,
      counts: this.observer.counts(u.name),
    }));
  }

  /** `content` with every byte read from it counted as served from the cache of `upstream`. */
  private countServed(upstream: string, content: BlobContent): BlobContent {
    const observer = this.observer;
    return {
      ...content,
      open: async (start, end) => {
        const source = await content.open(start, end);
        if (canRecycleBuffers(source)) {
          // Counted once read, so the answer still gets the stream itself (which reuses its buffers when piped to
          // the socket): through a counting Transform every chunk was a fresh 1 MiB buffer, and a warm 256 MiB pull
          // ran 10-12 full collections.
          let counted = false;
          const count = () => {
            if (counted) return;
            counted = true;
            observer.servedBytes(upstream, source.bytesRead);
          };
          source.once('end', count).once('close', count);
          return source;
        }
        const counter = new Transform({
          transform(chunk: Buffer, _enc, done) {
            observer.servedBytes(upstream, chunk.length);
            done(null, chunk);
          },
        });
        source.once('error', (err) => counter.destroy(err));
        counter.once('close', () => {
          if (!source.destroyed) source.destroy();
        });
        return source.pipe(counter);
      },
    };
  }

  upstreamOf(name: string): string | null {
    const r = this.router.route(name, undefined);
    return r.kind === 'mirror' ? r.target.upstream.name : null;
  }

  private client(u: UpstreamSettings): UpstreamClient {
    return this.clients.get(u.name) as UpstreamClient;
  }

  // ---- entry point -------------------------------------------------------------------------------------------

  decorate(local: Namespace): Namespace {
    return {
      repository: (name, ns) => {
        const r = this.router.route(name, ns);
        if (r.kind === 'local') return local.repository(name);
        if (r.kind === 'unknown') {
          throw registryError('NAME_UNKNOWN', { name, ns: r.namespace }, { message: `no upstream mirrors ${name} for namespace ${r.namespace}` });
        }
        return new MirroredRepository(name, r.target, this);
      },
      // The cached copy of a mirrored repository is local storage (the API's and the UI's deletes evict from it).
      stored: (name, ctx) => local.stored(name, ctx),
      catalog: (page) => local.catalog(page),
      // A mirrored repository's cached copy is local storage: deleting it evicts the cache (the next pull refetches).
      deleteRepository: (name, ctx) => local.deleteRepository(name, ctx),
    };
  }

  /** Referrers of cached manifests of `target` (those that arrived with their subject); the upstream is not asked. */
  cachedReferrers(target: MirrorTarget, subject: Digest, artifactType?: string): Promise<ReferrerDescriptor[]> {
    return this.deps.store.referrers(target.localName, subject, artifactType);
  }

  /** Runs `fn` once for concurrent callers with the same key. */
  private singleFlight<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const existing = this.flights.get(key) as Promise<T> | undefined;
    if (existing) return existing;
    const p = fn().finally(() => this.flights.delete(key));
    this.flights.set(key, p);
    return p;
  }

  // ---- bookkeeping -------------------------------------------------------------------------------------------

  /** Rewrites a link (same content) so its modification time records the pull; at most once per interval. */
  private touch(target: MirrorTarget, path: string, d: Digest): void {
    const ttl = target.upstream.ttlMs;
    if (ttl <= 0) return;
    const interval = Math.min(ttl / 10, 3_600_000);
    const now = Date.now();
    const last = this.touched.get(path);
    if (last !== undefined && now - last < interval) return;
    if (this.touched.size > 100_000) this.touched.clear();
    this.touched.set(path, now);
    this.deps.driver.putContent(path, Buffer.from(d.value)).catch((err: unknown) => this.logger.warn({ err }, 'cannot record a cache access'));
  }

  /** Marks a repository as a cache repository (what the expiry looks for). */
  private async mark(target: MirrorTarget): Promise<void> {
    if (this.marked.has(target.localName)) return;
    await this.deps.driver.putContent(cacheMarkerPath(target.localName), Buffer.from(target.upstream.name));
    this.marked.add(target.localName);
  }

  private async readLink(path: string): Promise<{ digest: Digest; modTime: number } | null> {
    try {
      const [content, info] = await Promise.all([this.deps.driver.getContent(path), this.deps.driver.stat(path)]);
      const digest = tryParseDigest(content.toString('utf8').trim());
      return digest ? { digest, modTime: info.modTime.getTime() } : null;
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  // ---- manifests ---------------------------------------------------------------------------------------------

  /** The manifest `ref` of `target`: cached, else from the upstream (for {@link MirroredRepository}). */
  async manifest(target: MirrorTarget, ref: Reference): Promise<CachedManifest> {
    const m = ref.kind === 'digest' ? await this.manifestByDigest(target, ref.digest) : await this.manifestByTag(target, ref.tag);
    this.touch(target, paths.revisionLink(target.localName, m.digest), m.digest);
    const name = target.upstream.name;
    if (m.fetched) {
      this.observer.miss(name, 'manifest');
    } else {
      this.observer.hit(name, 'manifest');
      this.observer.servedBytes(name, m.bytes.length);
    }
    return m;
  }

  private async cached(target: MirrorTarget, d: Digest): Promise<CachedManifest | null> {
    const m = await this.deps.store.getManifest(target.localName, d);
    return m ? { bytes: m.bytes, digest: m.digest, mediaType: m.mediaType } : null;
  }

  private async manifestByDigest(target: MirrorTarget, d: Digest): Promise<CachedManifest> {
    const local = await this.cached(target, d);
    if (local) return local;
    return this.singleFlight(`m|${target.upstream.name}|${target.remoteName}|${d.value}`, () => this.fetchManifest(target, d.value, undefined, d));
  }

  private async manifestByTag(target: MirrorTarget, tag: string): Promise<CachedManifest> {
    const link = await this.readLink(paths.tagCurrentLink(target.localName, tag));
    const current = link ? await this.cached(target, link.digest) : null;
    if (link && current) {
      const client = this.client(target.upstream);
      if (Date.now() - link.modTime < target.upstream.tagTtlMs || client.health.skipRevalidation) return current;
      try {
        const fresh = await this.singleFlight(`h|${target.upstream.name}|${target.remoteName}|${tag}`, () =>
          this.revalidate(target, tag, link.digest),
        );
        return fresh ?? current;
      } catch (err) {
        if (err instanceof UpstreamError) return current;
        throw err;
      }
    }
    return this.singleFlight(`t|${target.upstream.name}|${target.remoteName}|${tag}`, () => this.fetchManifest(target, tag, tag));
  }

  /**
   * Asks the upstream (HEAD) whether the tag still points at `known`: same digest → the tag's check time is
   * renewed (null: serve the cached one); another digest → that manifest is fetched and the tag moved. A tag the
   * upstream no longer has is removed here too (MANIFEST_UNKNOWN).
   */
  private async revalidate(target: MirrorTarget, tag: string, known: Digest): Promise<CachedManifest | null> {
    const client = this.client(target.upstream);
    const res = await client.request({ method: 'HEAD', repository: target.remoteName, path: `manifests/${tag}`, accept: MANIFEST_ACCEPT });
    await res.body?.cancel().catch(() => undefined);
    if (res.status === 404) {
      await this.deps.store.deleteTag(target.localName, tag);
      throw registryError('MANIFEST_UNKNOWN', { name: target.localName, reference: tag }, { message: `tag unknown to upstream ${client.name}` });
    }
    if (res.status !== 200) {
      throw new UpstreamError(client.name, 'status', `upstream ${client.name} answered ${res.status} to a tag check`, res.status);
    }
    const remote = tryParseDigest(res.headers.get('docker-content-digest') ?? '');
    if (remote && remote.value === known.value) {
      await this.deps.driver.putContent(paths.tagCurrentLink(target.localName, tag), Buffer.from(known.value));
      return null;
    }
    // Changed (or the upstream does not say): fetch the manifest by digest when known, else by tag.
    return this.fetchManifest(target, remote ? remote.value : tag, tag, remote ?? undefined);
  }

  /** GETs a manifest from the upstream, verifies it and caches it (and the tag). */
  private async fetchManifest(target: MirrorTarget, reference: string, tag: string | undefined, expected?: Digest): Promise<CachedManifest> {
    const client = this.client(target.upstream);
    const unknown = () =>
      registryError('MANIFEST_UNKNOWN', { name: target.localName, reference }, { message: `manifest unknown to upstream ${client.name}` });
    const signal = AbortSignal.timeout(target.upstream.timeoutMs * 2);
    let bytes: Buffer;
    let res: UpstreamAnswer;
    try {
      res = await client.request({ method: 'GET', repository: target.remoteName, path: `manifests/${reference}`, accept: MANIFEST_ACCEPT, signal });
      if (res.status !== 200) {
        await res.body?.cancel().catch(() => undefined);
        if (res.status === 401 || res.status === 403)
          this.logger.info({ upstream: client.name, repository: target.remoteName, status: res.status }, 'upstream refused a manifest');
        throw unknown();
      }
      bytes = await readBody(res, MAX_MANIFEST_BYTES);
      this.observer.fetchedBytes(client.name, bytes.length);
    } catch (err) {
      if (err instanceof RegistryError) throw err;
      if (!(err instanceof UpstreamError)) client.health.failed((err as Error).message);
      throw toClientError(
        err instanceof UpstreamError ? err : new UpstreamError(client.name, 'timeout', `upstream ${client.name} failed while sending a manifest`),
        expected,
      );
    }
    // Spec: "If <reference> is a digest, clients SHOULD verify that the returned manifest matches that digest", and
    // Docker-Content-Digest, when used, "MUST" match the returned manifest: berth is the client here.
    const headerDigest = tryParseDigest(res.headers.get('docker-content-digest') ?? '');
    const digest = digestOf(bytes, expected?.algorithm ?? headerDigest?.algorithm ?? 'sha256');
    if (
      (expected && expected.value !== digest.value) ||
      (headerDigest && headerDigest.algorithm === digest.algorithm && headerDigest.value !== digest.value)
    ) {
      throw registryError(
        'UNAVAILABLE',
        { upstream: client.name, reference },
        { message: `upstream ${client.name} sent a manifest that does not match its digest` },
      );
    }
    const parsed = parseManifest(bytes);
    const { driver, store } = this.deps;
    const local = target.localName;
    await this.mark(target);
    if ((await store.blobSize(digest)) !== bytes.length) await driver.putContent(paths.blobData(digest), bytes);
    await driver.putContent(paths.revisionLink(local, digest), Buffer.from(digest.value));
    if (parsed.subject) await driver.putContent(paths.referrerLink(local, parsed.subject.digest, digest), Buffer.from(digest.value));
    if (tag !== undefined) {
      await driver.putContent(paths.tagIndexLink(local, tag, digest), Buffer.from(digest.value));
      await driver.putContent(paths.tagCurrentLink(local, tag), Buffer.from(digest.value));
    }
    this.deps.onCached?.(local);
    return { bytes, digest, mediaType: parsed.mediaType, fetched: true };
  }

  // ---- blobs -------------------------------------------------------------------------------------------------

  /** The blob `d` of `target`: cached, else filled from the upstream (for {@link MirroredRepository}). */
  async blob(target: MirrorTarget, d: Digest, headOnly: boolean): Promise<BlobContent | null> {
    const { store } = this.deps;
    const key = `${target.upstream.name}|${target.remoteName}|${d.value}`;
    let size = await store.repositoryBlobSize(target.localName, d);
    if (size === null && !this.fills.has(key) && (await store.blobSize(d)) !== null) {
      // The bytes are here (another repository or image has them): link them once the upstream confirms this
      // repository has the blob, so nobody reads content through a repository it does not belong to.
      size = await this.adoptBlob(target, d);
    }
    const upstreamName = target.upstream.name;
    if (size !== null) {
      this.touch(target, paths.layerLink(target.localName, d), d);
      if (!headOnly) this.observer.hit(upstreamName, 'blob');
      return this.countServed(upstreamName, storedBlob(store, d, size));
    }
    let fill = this.fills.get(key);
    if (!fill && headOnly) return this.headUpstreamBlob(target, d);
    if (!headOnly) this.observer.miss(upstreamName, 'blob');
    if (!fill) {
      const created: BlobFill = new BlobFill(
        { client: this.client(target.upstream), driver: this.deps.driver, store, logger: this.logger, coordinator: this.coordinator },
        target.remoteName,
        target.localName,
        d,
        async () => {
          await this.mark(target);
          this.touched.set(paths.layerLink(target.localName, d), Date.now());
        },
        () => {
          if (this.fills.get(key) === created) this.fills.delete(key);
        },
      );
      fill = created;
      this.fills.set(key, created);
    }
    const info = await fill.ready;
    if (!fill.usable) {
      const stored = await store.repositoryBlobSize(target.localName, d);
      return stored === null ? null : storedBlob(store, d, stored);
    }
    const streaming = fill;
    return { digest: d, size: info.size, redirectURL: async () => null, open: async (start, end) => streaming.reader(start, end) };
  }

  /** The upstream's answer to HEAD for a blob of `target` (its body, if any, discarded). */
  private async headUpstream(target: MirrorTarget, d: Digest): Promise<UpstreamAnswer> {
    let res: UpstreamAnswer;
    try {
      res = await this.client(target.upstream).request({ method: 'HEAD', repository: target.remoteName, path: `blobs/${d.value}` });
    } catch (err) {
      throw toClientError(err, d);
    }
    await res.body?.cancel().catch(() => undefined);
    return res;
  }

  /** HEAD for a blob not cached: answered from the upstream's HEAD, without downloading it. */
  private async headUpstreamBlob(target: MirrorTarget, d: Digest): Promise<BlobContent | null> {
    const res = await this.headUpstream(target, d);
    if (res.status !== 200) return null;
    const len = res.headers.get('content-length');
    const size = len !== null && /^\d+$/.test(len) ? Number(len) : undefined;
    return {
      digest: d,
      size,
      redirectURL: async () => null,
      open: async () => {
        throw registryError('BLOB_UNKNOWN', { digest: d.value }, { message: 'blob not cached yet' });
      },
    };
  }

  /** Links a blob present in storage into the cache repository after the upstream confirmed it (null: it did not). */
  private async adoptBlob(target: MirrorTarget, d: Digest): Promise<number | null> {
    return this.singleFlight(`a|${target.upstream.name}|${target.remoteName}|${d.value}`, async () => {
      const res = await this.headUpstream(target, d);
      if (res.status !== 200) return null;
      await this.mark(target);
      await this.deps.store.linkBlob(target.localName, d);
      return this.deps.store.repositoryBlobSize(target.localName, d);
    });
  }

  // ---- tags --------------------------------------------------------------------------------------------------

  /** A page of the tags of `name` as the upstream of `target` lists them (for {@link MirroredRepository}). */
  async tags(name: string, target: MirrorTarget, page: TagPage): Promise<TagList | null> {
    const client = this.client(target.upstream);
    const qs = new URLSearchParams();
    if (page.n !== undefined) qs.set('n', String(page.n));
    if (page.last !== undefined && page.last !== '') qs.set('last', page.last);
    const suffix = qs.size > 0 ? `?${qs.toString()}` : '';
    let res: UpstreamAnswer | undefined;
    try {
      res = await client.request({
        method: 'GET',
        repository: target.remoteName,
        path: `tags/list${suffix}`,
        signal: AbortSignal.timeout(target.upstream.timeoutMs * 2),
      });
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
      // Stale-if-error: the tags this cache knows.
      const tags = await this.deps.store.listTags(target.localName);
      if (tags === null) throw toClientError(err);
      return { tags };
    }
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined);
      throw registryError('NAME_UNKNOWN', { name }, { message: `repository unknown to upstream ${client.name}` });
    }
    let body: { tags?: unknown };
    try {
      body = JSON.parse((await readBody(res, 16 * 1024 * 1024)).toString('utf8')) as { tags?: unknown };
    } catch (err) {
      throw registryError('UNAVAILABLE', { upstream: client.name }, { message: `upstream ${client.name} sent an invalid tag list`, cause: err });
    }
    const tags = Array.isArray(body.tags) ? body.tags.filter((t): t is string => typeof t === 'string') : [];
    const next = /[?&]last=([^&>]+)/.exec(res.headers.get('link') ?? '');
    return next && tags.length > 0 ? { tags, next: decodeURIComponent(next[1] as string) } : { tags };
  }

  // ---- lifecycle ---------------------------------------------------------------------------------------------

  async expire(now?: number): Promise<ExpiryResult> {
    const ttls = new Map(this.settings.upstreams.map((u) => [u.name, u.ttlMs]));
    return expireCachedContent(this.deps, (name) => ttls.get(name), now);
  }

  start(): void {
    if (this.expiryTimer || this.settings.expiryIntervalMs <= 0) return;
    if (!this.settings.upstreams.some((u) => u.ttlMs > 0)) return;
    this.expiryTimer = setInterval(() => {
      if (this.expiring) return;
      this.expiring = this.expire()
        .catch((err: unknown) => this.logger.warn({ err }, 'cache expiry failed'))
        .finally(() => (this.expiring = undefined));
    }, this.settings.expiryIntervalMs);
    this.expiryTimer.unref();
  }

  async close(): Promise<void> {
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    this.expiryTimer = undefined;
    const fills = [...this.fills.values()];
    for (const f of fills) f.abort();
    await Promise.all(fills.map((f) => f.finished));
    await this.expiring;
    await this.coordinator.close();
  }
}

/**
 * A repository as served from a mirror's `target`: reads go through the cache, writes throw UNSUPPORTED. One is made
 * per request; each facet is made on first use, a small object whose methods live on the prototype.
 */
class MirroredRepository implements Repository {
  declare readonly namespace?: string;
  private blobFacet: MirroredBlobs | undefined;
  private manifestFacet: MirroredManifests | undefined;
  private tagFacet: MirroredTags | undefined;

  constructor(
    readonly name: string,
    readonly target: MirrorTarget,
    readonly cache: PullThroughCache,
  ) {
    if (target.namespace !== undefined) this.namespace = target.namespace;
  }

  get blobs(): BlobStore {
    return (this.blobFacet ??= new MirroredBlobs(this));
  }

  get manifests(): ManifestStore {
    return (this.manifestFacet ??= new MirroredManifests(this));
  }

  get tags(): TagStore {
    return (this.tagFacet ??= new MirroredTags(this));
  }

  get uploads(): never {
    return this.unsupported();
  }

  referrers(subject: Digest, artifactType?: string): Promise<ReferrerDescriptor[]> {
    return this.cache.cachedReferrers(this.target, subject, artifactType);
  }

  /** Throws UNSUPPORTED: a mirror takes no writes. */
  unsupported(): never {
    const { name, target } = this;
    throw registryError(
      'UNSUPPORTED',
      { name, upstream: target.upstream.name },
      {
        message: `${name} is a mirror of ${target.upstream.name}: push to the upstream, or to a repository no upstream mirrors`,
      },
    );
  }
}

class MirroredBlobs implements BlobStore {
  constructor(private readonly repo: MirroredRepository) {}

  get(d: Digest, options: { headOnly: boolean }): Promise<BlobContent | null> {
    return this.repo.cache.blob(this.repo.target, d, options.headOnly);
  }

  delete(): never {
    return this.repo.unsupported();
  }

  mount(): never {
    return this.repo.unsupported();
  }
}

class MirroredManifests implements ManifestStore {
  constructor(private readonly repo: MirroredRepository) {}

  get(ref: Reference): Promise<StoredManifest> {
    return this.repo.cache.manifest(this.repo.target, ref);
  }

  put(): never {
    return this.repo.unsupported();
  }

  delete(): never {
    return this.repo.unsupported();
  }
}

class MirroredTags implements TagStore {
  constructor(private readonly repo: MirroredRepository) {}

  list(page: TagPage): Promise<TagList | null> {
    return this.repo.cache.tags(this.repo.name, this.repo.target, page);
  }

  delete(): never {
    return this.repo.unsupported();
  }
}

/** Reads a response body of at most `limit` bytes. */
async function readBody(res: UpstreamAnswer, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  if (!res.body) return Buffer.alloc(0);
  for await (const part of res.body) {
    total += part.byteLength;
    if (total > limit) {
      await res.body.cancel().catch(() => undefined);
      throw registryError('MANIFEST_TOO_BIG', { limit });
    }
    chunks.push(Buffer.from(part.buffer, part.byteOffset, part.byteLength));
  }
  return Buffer.concat(chunks, total);
}
