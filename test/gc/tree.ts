import { readdir, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';

/** Every file under `root` as `path size mtimeMs`, sorted: equal snapshots mean nothing was written or deleted. */
export async function snapshot(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name);
      if (entry.isDirectory()) await walk(full);
      else {
        const s = await stat(full);
        out.push(`${relative(root, full)} ${s.size} ${s.mtimeMs}`);
      }
    }
  };
  await walk(root);
  return out.sort();
}

/** The host path of a blob's data in a filesystem root (registry:2 layout). */
export function blobFile(root: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(root, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}

/** The host path of a `_layers` link. */
export function layerLinkFile(root: string, repo: string, digest: string): string {
  return join(root, 'docker/registry/v2/repositories', repo, '_layers/sha256', digest.slice('sha256:'.length), 'link');
}

/** Digests of every blob whose data exists. */
export async function storedBlobs(root: string): Promise<Set<string>> {
  const base = join(root, 'docker/registry/v2/blobs/sha256');
  const out = new Set<string>();
  let prefixes: string[] = [];
  try {
    prefixes = await readdir(base);
  } catch {
    return out;
  }
  for (const p of prefixes) {
    for (const hex of await readdir(join(base, p))) {
      try {
        await stat(join(base, p, hex, 'data'));
        out.add(`sha256:${hex}`);
      } catch {
        // an empty directory left by a sweep
      }
    }
  }
  return out;
}
