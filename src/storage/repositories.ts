import { isNotFound, type StorageDriver } from './driver.js';
import { basename, paths } from './paths.js';

/** A repository folder and what it holds (see the rule in paths.ts). */
export interface RepositoryEntry {
  name: string;
  /** It has `_manifests/` or `_layers/`: pushed (or cached) content, what the catalog lists. */
  content: boolean;
  /** It has `_uploads/`: upload data, what gc and upload purging look at. */
  uploads: boolean;
}

/** Options of {@link enumerateRepositories}. */
export interface EnumerateOptions {
  /** Only names lexically after this one; subtrees that hold only earlier names are not listed at all. */
  startAfter?: string;
  /** Stops the walk (rejects with the signal's reason). */
  signal?: AbortSignal;
}

/**
 * The one repository enumerator (catalog, gc, fsck, du and upload purging all use it): every repository under
 * `repositories/` in byte-wise lexical order of its name, by the rule in paths.ts. It is one
 * {@link StorageDriver.walk} that does not enter `_`-prefixed folders (so on S3 it is a few LIST calls per page and
 * no HEAD, on a filesystem one sorted read per folder outside the `_` areas). A caller that stops early (a catalog
 * page of `n`) stops the walk, and `startAfter` starts the walk at the requested name.
 *
 * The walk runs in walk-key order, where a folder counts as its name followed by `/`; names differ from that order
 * only around `-` and `.` (which sort before `/`): the walk reaches `a-b/` before `a/`, the catalog wants `a`
 * before `a-b`. So names found are held until no name still to come can sort before them (see {@link lowerBound}).
 */
export async function* enumerateRepositories(driver: StorageDriver, options: EnumerateOptions = {}): AsyncGenerator<RepositoryEntry> {
  const root = paths.repositoriesRoot;
  const after = options.startAfter;
  const found = new Map<string, RepositoryEntry>();
  const pending: string[] = [];
  const walk = driver.walk(root, {
    ...(after !== undefined ? { startAfter: `${root}/${after}` } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    skip: (dir) => basename(dir.path).startsWith('_'),
  });
  /** Yields the pending names that are complete and that no name still to come can precede. */
  function* release(position: string | null): Generator<RepositoryEntry> {
    pending.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const bound = position === null ? null : lowerBound(position);
    while (pending.length > 0) {
      const name = pending[0] as string;
      // Complete once the walk is past the name's own `_` folders; releasable once nothing to come sorts first.
      if (position !== null && (position <= `${name}/_~` || name > (bound as string))) return;
      pending.shift();
      const entry = found.get(name) as RepositoryEntry;
      found.delete(name);
      yield entry;
    }
  }
  try {
    for await (const info of walk) {
      const rel = info.path.slice(root.length + 1);
      const position = info.isDir ? `${rel}/` : rel;
      if (info.isDir) {
        const slash = rel.lastIndexOf('/');
        const folder = rel.slice(slash + 1);
        const name = slash < 0 ? '' : rel.slice(0, slash);
        const content = folder === '_manifests' || folder === '_layers';
        if (name !== '' && (content || folder === '_uploads') && (after === undefined || name > after)) {
          let entry = found.get(name);
          if (!entry) {
            entry = { name, content: false, uploads: false };
            found.set(name, entry);
            pending.push(name);
          }
          if (content) entry.content = true;
          else entry.uploads = true;
        }
      }
      yield* release(position);
    }
  } catch (err) {
    if (!isNotFound(err)) throw err; // no repositories/ folder yet: no repositories
  }
  yield* release(null);
}

/**
 * The smallest name a repository still to be found can have once the walk is at `position` (a walk key relative
 * to `repositories/`). A later name `M` has a folder `M/_x/` whose key is past `position`, so `M` sorts after
 * `position`, or `M` is a prefix of `position` that ends before `-` or `.` (those sort before `/`), or before a `/`
 * followed by something that sorts before `_` (the name's `_` folders are still ahead). The shortest such prefix
 * is the bound.
 */
function lowerBound(position: string): string {
  for (let i = 0; i < position.length; i++) {
    const c = position[i];
    if (c === '-' || c === '.') return position.slice(0, i);
    if (c === '/') {
      const next = position[i + 1];
      if (next === undefined || next < '_') return position.slice(0, i);
    }
  }
  return position;
}

/** The names {@link enumerateRepositories} yields that satisfy `which`, collected (lexically ordered). */
export async function repositoryNames(
  driver: StorageDriver,
  which: (e: RepositoryEntry) => boolean,
  options: EnumerateOptions = {},
): Promise<string[]> {
  const out: string[] = [];
  for await (const e of enumerateRepositories(driver, options)) if (which(e)) out.push(e.name);
  return out;
}
