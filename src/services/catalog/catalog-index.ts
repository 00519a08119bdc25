import type { Logger } from 'pino';
import { checkKeys, duration, int, section, type RawSection } from '../../config/fields.js';
import type { Digest } from '../../oci/digest.js';
import type { StorageDriver } from '../../storage/driver.js';
import { listOrEmpty } from '../../storage/driver-utils.js';
import { basename, paths } from '../../storage/paths.js';
import { compareStrings, type RegistryStore } from '../../storage/registry-store.js';
import { enumerateRepositories } from '../../storage/repositories.js';
import { manifestFacts, tagPushedAt, type ManifestFacts } from './image-facts.js';
import type { IndexEntry, RepositoryIndex } from './repository-index.js';

/** `_catalog` page size without `n` (as registry:2). */
export const DEFAULT_PAGE = 100;
/** Largest `n` accepted (registry:2's `catalog.maxentries` default). */
export const MAX_PAGE = 1000;
/** Most index entries one filtered page looks at before answering with what it found and a `next`. */
export const MAX_SCANNED = 10_000;
/** Most search results kept (a search for "a" in a huge registry stays bounded in memory). */
export const MAX_SEARCH_MATCHES = 10_000;

/** A page of repositories and where the next one starts (null at the end). */
export interface IndexPage {
  entries: IndexEntry[];
  next: string | null;
}

/** Options of {@link CatalogIndex}. */
export interface CatalogIndexOptions {
  /** Time between reconciliations with storage (0: never). */
  reconcileIntervalMs: number;
  /** How many repositories a build summarizes at once. */
  concurrency?: number;
  /** How many storage walks for pages may run at once while the index is not built (others wait). */
  walksAtOnce?: number;
}

/** Reads `berth.index` (`{reconcileinterval: 10m, concurrency: 16}`) from `config.berth.raw`. */
export function parseIndexOptions(berthRaw: RawSection, warn: (msg: string) => void = () => {}): CatalogIndexOptions {
  if (berthRaw.index === undefined || berthRaw.index === null) return { reconcileIntervalMs: 10 * 60_000 };
  const raw = section(berthRaw, 'index', 'berth.');
  checkKeys(raw, 'berth.index.', ['reconcileinterval', 'concurrency'], warn);
  return {
    reconcileIntervalMs: duration(raw, 'reconcileinterval', 'berth.index.', 10 * 60_000),
    concurrency: Math.max(1, int(raw, 'concurrency', 'berth.index.', 16)),
  };
}

/**
 * The catalog index service: keeps a {@link RepositoryIndex} up to date with storage and answers pages and searches
 * from it, so no request walks storage.
 *
 * - Pushes and deletes call {@link refresh} for their repository (and {@link forget} for a deleted one).
 * - {@link start} builds the index from storage in the background when no instance has built it yet, and
 *   reconciles it periodically (repositories registry:2 or another writer put straight into storage appear, vanished
 *   ones go). Until a build completed, pages come from a storage walk that lists only what the page needs, a bounded
 *   number at once.
 */
export class CatalogIndex {
  private readonly factsCache = new Map<string, ManifestFacts>();
  private readonly refreshing = new Map<string, { dirty: boolean; done: Promise<void> }>();
  private timer: NodeJS.Timeout | undefined;
  private building: Promise<void> | undefined;
  private startup: Promise<void> | undefined;
  private stopped = false;
  private walksRunning = 0;
  private readonly walkQueue: (() => void)[] = [];
  /** Set once a build completed in this process or `builtAt` said another instance did. */
  private knownBuilt = false;

  constructor(
    readonly index: RepositoryIndex,
    private readonly store: RegistryStore,
    private readonly driver: StorageDriver,
    private readonly logger: Logger,
    private readonly options: CatalogIndexOptions,
  ) {}

  // ---- reading storage ---------------------------------------------------------------------------------------

  /** Facts of a manifest, cached by digest (content-addressed: they never change). */
  async facts(repo: string, d: Digest): Promise<ManifestFacts | null> {
    const cached = this.factsCache.get(d.value);
    if (cached) return (await this.store.hasManifest(repo, d)) ? cached : null;
    const f = await manifestFacts(this.store, this.driver, repo, d);
    if (f) {
      if (this.factsCache.size >= 20_000) this.factsCache.delete(this.factsCache.keys().next().value as string);
      this.factsCache.set(d.value, f);
    }
    return f;
  }

  /** A repository's entry as storage has it now, or null when it is not a repository. */
  async summarize(name: string): Promise<IndexEntry | null> {
    const stamp = Date.now();
    if (!(await this.store.repositoryExists(name))) return null;
    const tags = (await listOrEmpty(this.driver, paths.tagsDir(name))).map(basename);
    const parts = new Map<string, number>();
    let tagCount = 0;
    let newest: { at: number; description: string } | null = null;
    for (let i = 0; i < tags.length; i += 32) {
      await Promise.all(
        tags.slice(i, i + 32).map(async (tag) => {
          const d = await this.store.resolveTag(name, tag);
          if (!d) return;
          const [f, at] = await Promise.all([this.facts(name, d), tagPushedAt(this.driver, name, tag)]);
          if (!f) return;
          tagCount++;
          for (const [k, v] of f.parts) parts.set(k, v);
          const t = at?.getTime() ?? 0;
          if (!newest || t > newest.at) newest = { at: t, description: f.description };
        }),
      );
    }
    const last = newest as { at: number; description: string } | null;
    return {
      name,
      tagCount,
      size: [...parts.values()].reduce((a, b) => a + b, 0),
      lastPush: last && last.at > 0 ? new Date(last.at).toISOString() : null,
      description: last?.description ?? '',
      stamp,
    };
  }

  // ---- keeping it up to date ---------------------------------------------------------------------------------

  /**
   * Re-reads one repository from storage into the index (after a push or a delete). Concurrent calls for one
   * repository coalesce: one more read runs after the current one, so the last write always wins.
   */
  async refresh(name: string): Promise<void> {
    const running = this.refreshing.get(name);
    if (running) {
      running.dirty = true;
      return running.done;
    }
    const state = { dirty: false, done: Promise.resolve() };
    state.done = (async () => {
      try {
        do {
          state.dirty = false;
          const entry = await this.summarize(name);
          if (entry) await this.index.put(entry);
          else await this.index.remove(name);
        } while (state.dirty);
      } finally {
        this.refreshing.delete(name);
      }
    })();
    this.refreshing.set(name, state);
    return state.done;
  }

  /** Adds a repository that has no entry yet (a first blob upload makes a repository, as in registry:2). */
  async ensure(name: string): Promise<void> {
    if (!(await this.index.get(name))) await this.refresh(name);
  }

  /** Removes a deleted repository from the index at once. */
  async forget(name: string): Promise<void> {
    await this.index.remove(name);
  }

  /**
   * Walks storage and writes every repository's entry; entries of repositories no longer in storage go, unless a
   * push recorded them after the walk began. With `clear`, starts from an empty index. Returns how many
   * repositories were indexed.
   */
  async rebuild(options: { clear?: boolean; signal?: AbortSignal } = {}): Promise<number> {
    const started = Date.now();
    if (options.clear) await this.index.clear();
    const concurrency = this.options.concurrency ?? 16;
    const seen = new Set<string>();
    let count = 0;
    const inFlight = new Set<Promise<void>>();
    for await (const { name, content } of enumerateRepositories(this.driver)) {
      if (options.signal?.aborted || this.stopped) return count;
      if (!content) continue;
      seen.add(name);
      const p: Promise<void> = this.summarize(name)
        .then(async (e) => {
          if (e) {
            await this.index.put(e);
            count++;
          }
        })
        .catch((err: unknown) => this.logger.warn({ err, repository: name }, 'catalog index: cannot read repository'))
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (inFlight.size >= concurrency) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    // Names the walk did not find: removed unless written after the walk began.
    let after: string | undefined;
    for (;;) {
      const page = await this.index.page(after, 1000);
      if (page.length === 0) break;
      for (const e of page) if (!seen.has(e.name)) await this.index.remove(e.name, started);
      after = (page[page.length - 1] as IndexEntry).name;
    }
    await this.index.markBuilt(Date.now());
    this.knownBuilt = true;
    return count;
  }

  /** Builds in the background when no instance has yet, then reconciles every `reconcileIntervalMs`. */
  start(): void {
    const run = (why: string) => {
      if (this.building || this.stopped) return;
      const t0 = Date.now();
      this.building = this.rebuild()
        .then((n) => this.logger.info({ repositories: n, ms: Date.now() - t0, why }, 'catalog index built from storage'))
        .catch((err: unknown) => this.logger.warn({ err }, 'catalog index: build from storage failed'))
        .finally(() => (this.building = undefined));
    };
    this.startup = this.index
      .builtAt()
      .then((at) => {
        if (at === null) run('startup');
        else this.knownBuilt = true;
      })
      .catch((err: unknown) => this.logger.warn({ err }, 'catalog index unavailable'));
    if (this.options.reconcileIntervalMs > 0) {
      this.timer = setInterval(() => run('reconcile'), this.options.reconcileIntervalMs);
      this.timer.unref();
    }
  }

  /** Waits for a running build (tests, `berth index rebuild`). */
  async idle(): Promise<void> {
    await this.startup;
    await this.building;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.building;
  }

  /** Whether pages come from the index (a build completed) rather than from a storage walk. */
  async isBuilt(): Promise<boolean> {
    if (this.knownBuilt) return true;
    this.knownBuilt = (await this.index.builtAt()) !== null;
    return this.knownBuilt;
  }

  // ---- answering ---------------------------------------------------------------------------------------------

  /**
   * Up to `n` repositories after `after` that `include` accepts, in lexical order. Looks at no more than
   * {@link MAX_SCANNED} entries: a caller who may see few of many repositories gets a short (even empty) page
   * with `next` set, and continues from there.
   */
  async page(after: string | undefined, n: number, include: (name: string) => Promise<boolean> = async () => true): Promise<IndexPage> {
    const built = await this.isBuilt();
    const entries: IndexEntry[] = [];
    let cursor = after;
    let scanned = 0;
    const batch = Math.max(n, 100);
    for (;;) {
      const chunk = built ? await this.index.page(cursor, batch) : await this.walkPage(cursor, batch);
      for (const e of chunk) {
        scanned++;
        cursor = e.name;
        if (await include(e.name)) {
          entries.push(e);
          if (entries.length >= n) {
            const more = built ? (await this.index.page(cursor, 1)).length > 0 : (await this.walkPage(cursor, 1)).length > 0;
            return { entries, next: more ? cursor : null };
          }
        }
      }
      if (chunk.length < batch) return { entries, next: null };
      if (scanned >= MAX_SCANNED) return { entries, next: cursor ?? null };
    }
  }

  /** Names from storage (before the index is built), each with its index entry or an empty one. */
  private async walkPage(after: string | undefined, n: number): Promise<IndexEntry[]> {
    await this.acquireWalk();
    try {
      const names: string[] = [];
      for await (const e of enumerateRepositories(this.driver, after === undefined ? {} : { startAfter: after })) {
        if (!e.content) continue;
        names.push(e.name);
        if (names.length >= n) break;
      }
      return Promise.all(
        names.map(async (name) => (await this.index.get(name)) ?? { name, tagCount: 0, size: 0, lastPush: null, description: '', stamp: 0 }),
      );
    } finally {
      this.releaseWalk();
    }
  }

  private async acquireWalk(): Promise<void> {
    if (this.walksRunning < (this.options.walksAtOnce ?? 2)) {
      this.walksRunning++;
      return;
    }
    await new Promise<void>((resolve) => this.walkQueue.push(resolve));
  }

  private releaseWalk(): void {
    const next = this.walkQueue.shift();
    if (next) next();
    else this.walksRunning--;
  }

  /**
   * Repositories whose name contains `term` (case-insensitive) that `include` accepts: exact matches first (the
   * whole name or its last component), then prefix matches, then the rest, each group in lexical order.
   */
  async search(term: string, include: (name: string) => Promise<boolean> = async () => true): Promise<IndexEntry[]> {
    const needle = term.toLowerCase();
    const matches: { e: IndexEntry; rank: number }[] = [];
    let after: string | undefined;
    for (;;) {
      const chunk = await this.index.page(after, 1000);
      for (const e of chunk) {
        const name = e.name.toLowerCase();
        if (!name.includes(needle)) continue;
        if (!(await include(e.name))) continue;
        const last = name.slice(name.lastIndexOf('/') + 1);
        const rank = name === needle || last === needle ? 0 : name.startsWith(needle) || last.startsWith(needle) ? 1 : 2;
        matches.push({ e, rank });
        if (matches.length >= MAX_SEARCH_MATCHES) break;
      }
      if (chunk.length < 1000 || matches.length >= MAX_SEARCH_MATCHES) break;
      after = (chunk[chunk.length - 1] as IndexEntry).name;
    }
    return matches.sort((a, b) => a.rank - b.rank || compareStrings(a.e.name, b.e.name)).map((m) => m.e);
  }
}
