import type { StorageDriver } from './driver.js';
import { listOrEmpty, statOrNull } from './driver-utils.js';
import { basename, paths } from './paths.js';
import { compareStrings } from './registry-store.js';

/**
 * Repository names in storage, in lexical (byte-wise) order, starting after `after`, lazily: a caller that stops
 * after n names has listed only the directories on the way to them.
 *
 * A repository is a directory under `repositories/` holding `_manifests` or `_layers`; `_`-prefixed directories are
 * never descended into (as registry:2 walks it). Lexical order of full names is not depth-first order (`a-c` sorts
 * between `a` and `a/b`), so the walk keeps a queue ordered by the smallest name each pending directory can hold
 * (the directory's own name), and expands the smallest first. Subtrees that can only hold names up to `after` are
 * never listed.
 */
export async function* walkRepositories(driver: StorageDriver, options: { after?: string } = {}): AsyncGenerator<string> {
  const after = options.after;
  /** Pending items: a directory to expand (`dir`) or a repository name found (`repo`). */
  const heap = new MinHeap<{ key: string; repo: boolean }>((a, b) => compareStrings(a.key, b.key) || (a.repo === b.repo ? 0 : a.repo ? -1 : 1));
  const mayHoldAfter = (name: string): boolean =>
    after === undefined || compareStrings(name, after) > 0 || compareStrings(`${name}/`, after) > 0 || after.startsWith(`${name}/`);
  const expand = async (dirPath: string, name: string): Promise<void> => {
    const children = await listOrEmpty(driver, dirPath);
    const names = children.map(basename);
    if (name !== '' && (names.includes('_manifests') || names.includes('_layers'))) {
      if (after === undefined || compareStrings(name, after) > 0) heap.push({ key: name, repo: true });
    }
    for (const child of names) {
      if (child.startsWith('_')) continue;
      const full = name === '' ? child : `${name}/${child}`;
      if (mayHoldAfter(full)) heap.push({ key: full, repo: false });
    }
  };
  await expand(paths.repositoriesRoot, '');
  for (;;) {
    const item = heap.pop();
    if (!item) return;
    if (item.repo) {
      yield item.key;
      continue;
    }
    const dir = `${paths.repositoriesRoot}/${item.key}`;
    const info = await statOrNull(driver, dir);
    if (info?.isDir) await expand(dir, item.key);
  }
}

/** Up to `n` repository names after `after`, in lexical order (see {@link walkRepositories}). */
export async function repositoryPage(driver: StorageDriver, after: string | undefined, n: number): Promise<string[]> {
  const out: string[] = [];
  if (n <= 0) return out;
  for await (const name of walkRepositories(driver, after === undefined ? {} : { after })) {
    out.push(name);
    if (out.length >= n) break;
  }
  return out;
}

/** A binary min-heap. */
class MinHeap<T> {
  private readonly items: T[] = [];
  constructor(private readonly less: (a: T, b: T) => number) {}

  push(item: T): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.less(a[i] as T, a[p] as T) >= 0) break;
      [a[i], a[p]] = [a[p] as T, a[i] as T];
      i = p;
    }
  }

  pop(): T | undefined {
    const a = this.items;
    if (a.length === 0) return undefined;
    const top = a[0] as T;
    const last = a.pop() as T;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(a[l] as T, a[m] as T) < 0) m = l;
        if (r < a.length && this.less(a[r] as T, a[m] as T) < 0) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m] as T, a[i] as T];
        i = m;
      }
    }
    return top;
  }
}
