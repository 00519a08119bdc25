/**
 * Catalog bench (issue 12): a registry:2 directory of BENCH_CATALOG_REPOS (default 20 000) repositories, served by
 * berth and by Debian's docker-registry (CNCF Distribution 2.8) side by side:
 * - paging `GET /v2/_catalog?n=1000` from the first page to the last (following `Link`), total ms;
 * - one `?n=1000` page in the middle, ms;
 * - a search (`/v1/search?q=`, berth only: registry:2 answers 404), ms;
 * - berth's index build from storage at startup (in the background; pages are answered meanwhile), ms.
 * Run: `npm run bench:catalog` (or `node dist/test/bench/catalog-bench.js` after `tsc`).
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnBerth } from '../helpers/berth-process.js';
import { startDockerRegistry } from '../helpers/docker-registry.js';

const REPOS = Number(process.env.BENCH_CATALOG_REPOS ?? 20_000);
const V2 = 'docker/registry/v2';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Writes what registry:2 would have after pushing one small image into each of `count` repositories. */
async function makeRegistry2Dir(root: string, count: number): Promise<string[]> {
  const layer = randomBytes(1024);
  const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64' }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: `sha256:${sha(config)}`, size: config.length },
      layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: `sha256:${sha(layer)}`, size: layer.length }],
    }),
  );
  for (const b of [layer, config, manifest]) {
    const h = sha(b);
    await mkdir(join(root, V2, 'blobs/sha256', h.slice(0, 2), h), { recursive: true });
    await writeFile(join(root, V2, 'blobs/sha256', h.slice(0, 2), h, 'data'), b);
  }
  const names: string[] = [];
  const words = ['app', 'web', 'db', 'cache', 'api', 'worker', 'proxy', 'tools'];
  for (let i = 0; i < count; i++) {
    const name = `team${String(i % 200).padStart(3, '0')}/${words[i % words.length]}-${String(i).padStart(5, '0')}`;
    names.push(name);
    const repo = join(root, V2, 'repositories', name);
    const link = async (path: string, digest: string) => {
      await mkdir(join(repo, path), { recursive: true });
      await writeFile(join(repo, path, 'link'), `sha256:${digest}`);
    };
    await Promise.all([
      link(`_layers/sha256/${sha(layer)}`, sha(layer)),
      link(`_layers/sha256/${sha(config)}`, sha(config)),
      link(`_manifests/revisions/sha256/${sha(manifest)}`, sha(manifest)),
      link('_manifests/tags/latest/current', sha(manifest)),
      link(`_manifests/tags/latest/index/sha256/${sha(manifest)}`, sha(manifest)),
    ]);
  }
  return names;
}

/** Pages `_catalog?n=1000` to the end; total ms and names seen. */
async function pageAll(url: string): Promise<{ ms: number; names: number; pages: number }> {
  const t0 = performance.now();
  let next: string | null = '/v2/_catalog?n=1000';
  let names = 0;
  let pages = 0;
  while (next) {
    const res: Response = await fetch(`${url}${next}`);
    if (res.status !== 200) throw new Error(`${url}${next}: HTTP ${res.status}`);
    names += ((await res.json()) as { repositories: string[] }).repositories.length;
    pages++;
    const link = res.headers.get('link');
    next = link ? (/<([^>]+)>/.exec(link)?.[1] ?? null) : null;
  }
  return { ms: performance.now() - t0, names, pages };
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'berth-catalog-bench-'));
  const teardowns: (() => unknown)[] = [];
  const t = { teardown: (fn: () => unknown) => teardowns.push(fn) };
  try {
    const t0 = performance.now();
    const names = await makeRegistry2Dir(root, REPOS);
    const middle = [...names].sort()[Math.floor(names.length / 2)] as string;
    process.stderr.write(`catalog bench: ${REPOS} repositories written in ${Math.round(performance.now() - t0)} ms\n`);
    const rows: Record<string, Record<string, number | string>> = {};

    const started = performance.now();
    const berth = await spawnBerth(undefined, {
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: root,
      REGISTRY_LOG_LEVEL: 'info',
      REGISTRY_BERTH_INDEX_RECONCILEINTERVAL: '0',
    });
    teardowns.push(() => berth.stop());
    const firstPage = await timed(() => fetch(`${berth.url}/v2/_catalog?n=1000`).then((r) => r.arrayBuffer()));
    while (!berth.output().includes('catalog index built from storage')) await new Promise((r) => setTimeout(r, 50));
    const buildMs = performance.now() - started;
    const berthAll = await pageAll(berth.url);
    const berthMiddle = await timed(() => fetch(`${berth.url}/v2/_catalog?n=1000&last=${encodeURIComponent(middle)}`).then((r) => r.arrayBuffer()));
    const search = await timed(() => fetch(`${berth.url}/v1/search?q=cache-01&n=25`).then((r) => r.arrayBuffer()));
    const searchBroad = await timed(() => fetch(`${berth.url}/v1/search?q=web&n=25`).then((r) => r.arrayBuffer()));
    rows.berth = {
      'page all (ms)': Math.round(berthAll.ms),
      pages: berthAll.pages,
      names: berthAll.names,
      'one page (ms)': Math.round(berthMiddle * 10) / 10,
      'search (ms)': Math.round(search * 10) / 10,
      'search, 2 500 hits (ms)': Math.round(searchBroad * 10) / 10,
      'first page while building (ms)': Math.round(firstPage),
      'index build at startup (ms)': Math.round(buildMs),
    };

    if (existsSync('/usr/bin/docker-registry')) {
      const reg = await startDockerRegistry(t, { rootDirectory: root });
      const regAll = await pageAll(reg.url);
      const regMiddle = await timed(() => fetch(`${reg.url}/v2/_catalog?n=1000&last=${encodeURIComponent(middle)}`).then((r) => r.arrayBuffer()));
      const regSearch = await fetch(`${reg.url}/v1/search?q=web`);
      rows['registry:2'] = {
        'page all (ms)': Math.round(regAll.ms),
        pages: regAll.pages,
        names: regAll.names,
        'one page (ms)': Math.round(regMiddle * 10) / 10,
        'search (ms)': `HTTP ${regSearch.status}`,
      };
      rows.speedup = { 'page all (ms)': `${(regAll.ms / berthAll.ms).toFixed(1)}x`, 'one page (ms)': `${(regMiddle / berthMiddle).toFixed(1)}x` };
    }
    console.table(rows);
  } finally {
    for (const fn of teardowns.reverse()) await fn();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
