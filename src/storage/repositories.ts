import type { StorageDriver } from './driver.js';
import { listOrEmpty, statOrNull } from './driver-utils.js';
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
  /** Stops the walk (rejects with the signal's reason) between directory listings. */
  signal?: AbortSignal;
}

/**
 * The one repository enumerator (catalog, gc, fsck, du and upload purging all use it): every repository under
 * `repositories/` in byte-wise lexical order of its name, by the rule in paths.ts. It lists one directory at a
 * time, so a caller that stops early (a catalog page of `n`) does not walk the whole tree, and `startAfter` skips
 * the subtrees before the requested page.
 */
export async function* enumerateRepositories(driver: StorageDriver, options: EnumerateOptions = {}): AsyncGenerator<RepositoryEntry> {
  const after = options.startAfter;
  yield* walkDir(driver, paths.repositoriesRoot, '', after, options.signal);
}

async function* walkDir(driver: StorageDriver, dir: string, prefix: string, after: string | undefined, signal: AbortSignal | undefined): AsyncGenerator<RepositoryEntry> {
  signal?.throwIfAborted();
  const children = (await listOrEmpty(driver, dir)).map(basename).filter((n) => !n.startsWith('_'));
  // A child `c` stands for its own name `prefix+c` and for its subtree `prefix+c/...`; in byte order a sibling
  // `c-x` sorts between the two (`-` < `/`), so the events are sorted by those keys rather than by child name.
  const events: Array<{ key: string; child: string; subtree: boolean }> = [];
  for (const c of children) {
    events.push({ key: `${prefix}${c}`, child: c, subtree: false });
    events.push({ key: `${prefix}${c}/`, child: c, subtree: true });
  }
  events.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const dirs = new Map<string, string[] | null>();
  const contentsOf = async (c: string): Promise<string[] | null> => {
    if (!dirs.has(c)) {
      const info = await statOrNull(driver, `${dir}/${c}`);
      dirs.set(c, info?.isDir ? (await listOrEmpty(driver, `${dir}/${c}`)).map(basename) : null);
    }
    return dirs.get(c) ?? null;
  };
  for (const e of events) {
    const name = `${prefix}${e.child}`;
    if (e.subtree) {
      // Every name in the subtree starts with `name/`: skip it when all of them sort before `after`.
      if (after !== undefined && `${name}/` < after && !after.startsWith(`${name}/`)) continue;
      if ((await contentsOf(e.child)) === null) continue;
      yield* walkDir(driver, `${dir}/${e.child}`, `${name}/`, after, signal);
      dirs.delete(e.child);
      continue;
    }
    if (after !== undefined && name <= after) continue;
    const names = await contentsOf(e.child);
    if (names === null) continue;
    const content = names.includes('_manifests') || names.includes('_layers');
    const uploads = names.includes('_uploads');
    if (content || uploads) yield { name, content, uploads };
  }
}

/** The names {@link enumerateRepositories} yields that satisfy `which`, collected (lexically ordered). */
export async function repositoryNames(driver: StorageDriver, which: (e: RepositoryEntry) => boolean, options: EnumerateOptions = {}): Promise<string[]> {
  const out: string[] = [];
  for await (const e of enumerateRepositories(driver, options)) if (which(e)) out.push(e.name);
  return out;
}
