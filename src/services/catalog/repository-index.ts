import { compareStrings } from '../../storage/registry-store.js';

/** What the catalog index keeps per repository. */
export interface IndexEntry {
  name: string;
  /** Tags that point at a manifest. */
  tagCount: number;
  /** Bytes of the distinct blobs its tags reference. */
  size: number;
  /** RFC 3339 time of the newest tag write, null when it has no tags. */
  lastPush: string | null;
  /** `org.opencontainers.image.description` of the newest tag (bounded, untrusted), "" when absent. */
  description: string;
  /**
   * Milliseconds since the epoch at which the facts in this entry were read from storage. A write with an older
   * stamp than the stored one is ignored, so a slow rebuild never overwrites what a push recorded after it began.
   */
  stamp: number;
}

/**
 * The catalog index seam: repositories and their summaries, in process or in Redis (shared by every replica).
 *
 * Contract (checked by `test/suites/repository-index-suite.ts` against every implementation):
 * - `page(after, n)` returns at most `n` entries whose names sort byte-wise after `after`, in lexical order, in
 *   O(n) (plus O(log N)); pages stay sorted and stable while entries are added or removed concurrently.
 * - `put` replaces the entry unless the stored one has a newer `stamp`; `remove(name, before)` removes it unless
 *   the stored one has a stamp newer than `before` (a push recorded after a storage walk began survives it).
 * - `built` is shared: once any instance marked the index built, every instance sees it.
 */
export interface RepositoryIndex {
  readonly name: string;
  put(entry: IndexEntry): Promise<void>;
  remove(name: string, before?: number): Promise<void>;
  get(name: string): Promise<IndexEntry | null>;
  page(after: string | undefined, n: number): Promise<IndexEntry[]>;
  /** When a complete build from storage finished (ms since the epoch), null when never. */
  builtAt(): Promise<number | null>;
  markBuilt(at: number): Promise<void>;
  count(): Promise<number>;
  /**
   * Records that the repository was deleted at `at` (ms), remembered for `ttlMs`: uploads started before then are
   * refused, so an upload session begun before a repository delete cannot bring blobs back into it.
   */
  markDeleted(name: string, at: number, ttlMs: number): Promise<void>;
  /** When the repository was last deleted (within the remembered time), else null. */
  deletedAt(name: string): Promise<number | null>;
  /** Removes everything (a rebuild from scratch). */
  clear(): Promise<void>;
  close(): Promise<void>;
}

/** In-process index: a sorted array of names and a map of entries. */
export class MemoryRepositoryIndex implements RepositoryIndex {
  readonly name = 'memory';
  private readonly names: string[] = [];
  private readonly entries = new Map<string, IndexEntry>();
  private built: number | null = null;
  private readonly deleted = new Map<string, { at: number; until: number }>();

  /** Position of the first name sorting after `name` (or at it, with `inclusive`). */
  private position(name: string, inclusive: boolean): number {
    let lo = 0;
    let hi = this.names.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const c = compareStrings(this.names[mid] as string, name);
      if (c < 0 || (c === 0 && !inclusive)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  async put(entry: IndexEntry): Promise<void> {
    const old = this.entries.get(entry.name);
    if (old && old.stamp > entry.stamp) return;
    if (!old) this.names.splice(this.position(entry.name, true), 0, entry.name);
    this.entries.set(entry.name, { ...entry });
  }

  async remove(name: string, before?: number): Promise<void> {
    const old = this.entries.get(name);
    if (!old || (before !== undefined && old.stamp > before)) return;
    this.entries.delete(name);
    this.names.splice(this.position(name, true), 1);
  }

  async get(name: string): Promise<IndexEntry | null> {
    const e = this.entries.get(name);
    return e ? { ...e } : null;
  }

  async page(after: string | undefined, n: number): Promise<IndexEntry[]> {
    const start = after === undefined ? 0 : this.position(after, false);
    return this.names.slice(start, start + n).map((name) => ({ ...(this.entries.get(name) as IndexEntry) }));
  }

  async builtAt(): Promise<number | null> {
    return this.built;
  }

  async markBuilt(at: number): Promise<void> {
    this.built = at;
  }

  async count(): Promise<number> {
    return this.names.length;
  }

  async markDeleted(name: string, at: number, ttlMs: number): Promise<void> {
    const now = Date.now();
    for (const [k, v] of this.deleted) if (v.until <= now) this.deleted.delete(k);
    this.deleted.set(name, { at, until: now + ttlMs });
  }

  async deletedAt(name: string): Promise<number | null> {
    const d = this.deleted.get(name);
    return d && d.until > Date.now() ? d.at : null;
  }

  async clear(): Promise<void> {
    this.names.length = 0;
    this.entries.clear();
    this.built = null;
    this.deleted.clear();
  }

  async close(): Promise<void> {}
}
