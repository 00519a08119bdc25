/**
 * The mirror part of `npm run bench` (issue 5): berth as a pull-through cache of Debian's docker-registry on loopback.
 * - cold pull of a 256 MiB layer through berth (upstream → berth → client, while berth stores it), MiB/s
 * - warm pull of the same layer (from berth's storage), MiB/s
 * - wall time of 20 concurrent cold pulls of another 256 MiB layer, relative to one cold pull
 * - the cold and warm pull of a third layer through docker-registry as a pull-through cache of the same upstream
 *   (`proxy.remoteurl`), the same client: registry:2's side of the comparison
 * Both servers run as their own processes with fresh storage. BENCH_MIRROR_MIB changes the size.
 * Run alone: `node dist/test/proxy/bench-mirror.js`; `benchMirror()` is exported for the main bench.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { digestStream } from '../helpers/digest.js';
import { cleanEnv, spawnBerth, waitReady } from '../helpers/berth-process.js';
import { freePort } from '../helpers/ports.js';
import { stopProcess } from '../helpers/process.js';

const MiB = 1024 * 1024;

/** Results of {@link benchMirror}. */
export interface MirrorBenchResult {
  sizeMiB: number;
  coldMiBps: number;
  warmMiBps: number;
  /** Wall time of one cold pull, ms. */
  coldOneMs: number;
  /** Wall time of 20 concurrent cold pulls of another blob of the same size, ms. */
  cold20Ms: number;
  /** cold20Ms / coldOneMs (1.0 = twenty clients cost what one does). */
  cold20Ratio: number;
  /** Wall time of 20 concurrent warm pulls of that blob, ms: what 20 clients cost without any upstream. */
  warm20Ms: number;
  /** docker-registry as a pull-through cache: a cold and a warm pull of a layer of the same size, MiB/s. */
  registry2ColdMiBps: number;
  registry2WarmMiBps: number;
}

interface Proc {
  url: string;
  proc: ChildProcess;
  dir: string;
}

async function stop(p: Proc): Promise<void> {
  await stopProcess(p.proc);
  await rm(p.dir, { recursive: true, force: true });
}

/** A docker-registry process with fresh storage; with `remoteurl`, a pull-through cache of that registry. */
async function startDockerRegistry(remoteurl?: string): Promise<Proc> {
  const dir = await mkdtemp(join(tmpdir(), remoteurl ? 'berth-bench-r2-mirror-' : 'berth-bench-upstream-'));
  const port = await freePort();
  const config = join(dir, 'config.yml');
  await writeFile(
    config,
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\n` +
      `http:\n  addr: 127.0.0.1:${port}\n${remoteurl ? `proxy:\n  remoteurl: ${remoteurl}\n` : ''}`,
  );
  const proc = spawn('/usr/bin/docker-registry', ['serve', config], { env: cleanEnv(), stdio: ['ignore', 'ignore', 'ignore'] });
  const p = { url: `http://127.0.0.1:${port}`, proc, dir };
  await waitReady(p.url, '/v2/', [200], { proc });
  return p;
}

async function startMirror(upstream: string): Promise<Proc> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-bench-mirror-'));
  const berth = await spawnBerth(
    undefined,
    {
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: join(dir, 'data'),
      REGISTRY_PROXY_REMOTEURL: upstream,
      REGISTRY_PROXY_SPOOLDIRECTORY: join(dir, 'spool'),
      REGISTRY_LOG_LEVEL: 'warn',
      REGISTRY_LOG_ACCESSLOG_DISABLED: 'true',
    },
    { readyPath: '/v2/', inheritStderr: true },
  );
  return { url: berth.url, proc: berth.proc, dir };
}

/** Pushes `size` pseudo-random bytes to `repo` on the upstream (one monolithic POST); returns the digest. */
async function pushBlob(url: string, repo: string, size: number): Promise<string> {
  const block = randomBytes(MiB);
  const hash = createHash('sha256');
  for (let off = 0; off < size; off += MiB) hash.update(block.subarray(0, Math.min(MiB, size - off)));
  const digest = `sha256:${hash.digest('hex')}`;
  const body = Readable.from(
    (function* () {
      for (let off = 0; off < size; off += MiB) yield block.subarray(0, Math.min(MiB, size - off));
    })(),
  );
  const start = await fetch(`${url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await start.arrayBuffer();
  const location = new URL(start.headers.get('location') ?? '', url);
  location.searchParams.set('digest', digest);
  const put = await fetch(location, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    body: Readable.toWeb(body) as ReadableStream,
    duplex: 'half',
  } as RequestInit);
  await put.arrayBuffer();
  if (put.status !== 201) throw new Error(`upstream push answered ${put.status}`);
  return digest;
}

/** GETs a blob, checks its digest, returns the wall time in ms. */
async function pull(url: string, repo: string, digest: string): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v2/${repo}/blobs/${digest}`);
  if (res.status !== 200) throw new Error(`pull answered ${res.status}`);
  if ((await digestStream(res.body as AsyncIterable<Uint8Array>)).digest !== digest) throw new Error('pulled bytes do not match the digest');
  return performance.now() - t0;
}

/** Runs the mirror benchmark (needs /usr/bin/docker-registry and a built dist/). */
export async function benchMirror(sizeMiB = Number(process.env.BENCH_MIRROR_MIB ?? 256)): Promise<MirrorBenchResult> {
  const size = sizeMiB * MiB;
  const upstream = await startDockerRegistry();
  let mirror: Proc | undefined;
  let r2mirror: Proc | undefined;
  try {
    mirror = await startMirror(upstream.url);
    r2mirror = await startDockerRegistry(upstream.url);
    const one = await pushBlob(upstream.url, 'library/bench', size);
    const twenty = await pushBlob(upstream.url, 'library/bench', size);
    const three = await pushBlob(upstream.url, 'library/bench', size);
    // What the pushes (and each mirror's fill) left for the disk is written out before each cold pull, not during it.
    execFileSync('sync');
    const r2ColdMs = await pull(r2mirror.url, 'library/bench', three);
    const r2WarmMs = await pull(r2mirror.url, 'library/bench', three);
    execFileSync('sync');
    const coldOneMs = await pull(mirror.url, 'library/bench', one);
    const warmMs = await pull(mirror.url, 'library/bench', one);
    const t0 = performance.now();
    const mirrorUrl = mirror.url;
    await Promise.all(Array.from({ length: 20 }, () => pull(mirrorUrl, 'library/bench', twenty)));
    const cold20Ms = performance.now() - t0;
    const t1 = performance.now();
    await Promise.all(Array.from({ length: 20 }, () => pull(mirrorUrl, 'library/bench', twenty)));
    const warm20Ms = performance.now() - t1;
    return {
      sizeMiB,
      coldMiBps: sizeMiB / (coldOneMs / 1000),
      warmMiBps: sizeMiB / (warmMs / 1000),
      coldOneMs,
      cold20Ms,
      cold20Ratio: cold20Ms / coldOneMs,
      warm20Ms,
      registry2ColdMiBps: sizeMiB / (r2ColdMs / 1000),
      registry2WarmMiBps: sizeMiB / (r2WarmMs / 1000),
    };
  } finally {
    if (r2mirror) await stop(r2mirror);
    if (mirror) await stop(mirror);
    await stop(upstream);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const r = await benchMirror();
  console.log(`mirror, ${r.sizeMiB} MiB layer`);
  console.log(`  cold pull through berth   ${r.coldMiBps.toFixed(0)} MiB/s (${r.coldOneMs.toFixed(0)} ms)`);
  console.log(`  warm pull from berth      ${r.warmMiBps.toFixed(0)} MiB/s`);
  console.log(`  20 concurrent cold pulls  ${r.cold20Ms.toFixed(0)} ms = ${r.cold20Ratio.toFixed(2)}x one cold pull`);
  console.log(`  20 concurrent warm pulls  ${r.warm20Ms.toFixed(0)} ms (the same 20 clients without upstream)`);
  console.log(`  registry:2 as a mirror    cold ${r.registry2ColdMiBps.toFixed(0)} MiB/s, warm ${r.registry2WarmMiBps.toFixed(0)} MiB/s`);
}
