/**
 * `npm run bench`: throughput, latency and memory of berth, and of Debian's docker-registry (CNCF Distribution
 * 2.8) when it is installed, measured the same way on loopback:
 * - monolithic push of a 256 MiB blob (POST ?digest= with the whole body), MiB/s
 * - blob GET of that blob, MiB/s
 * - manifest GET by tag at 32 connections for a few seconds, req/s and p99 latency
 * - peak RSS of the server process (VmHWM), including a 1 GiB push to show memory stays flat
 * Each server runs as its own process with a fresh storage directory. Set BENCH_BLOB_MIB / BENCH_BIG_MIB /
 * BENCH_SECONDS to change sizes. Results are printed as a table and written to bench-results.json in the temp dir.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { cleanEnv, spawnBerth, waitReady } from '../helpers/berth-process.js';
import { freePort } from '../helpers/ports.js';
import { stopProcess } from '../helpers/process.js';
import { extraCases } from './cases.js';
import './mirror-bench.js';
import './s3-bench.js';
import { sha256 } from '../helpers/digest.js';

const MiB = 1024 * 1024;
const BLOB_MIB = Number(process.env.BENCH_BLOB_MIB ?? 256);
const BIG_MIB = Number(process.env.BENCH_BIG_MIB ?? 1024);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = 32;

interface Target {
  name: string;
  url: string;
  proc: ChildProcess;
  dir: string;
}

async function startBerth(): Promise<Target> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-bench-'));
  const berth = await spawnBerth(
    undefined,
    { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir, REGISTRY_LOG_LEVEL: 'warn', REGISTRY_LOG_ACCESSLOG_DISABLED: 'true' },
    { readyPath: '/v2/', inheritStderr: true },
  );
  return { name: 'berth', url: berth.url, proc: berth.proc, dir };
}

async function startRegistry2(): Promise<Target | null> {
  if (!existsSync('/usr/bin/docker-registry')) return null;
  const dir = await mkdtemp(join(tmpdir(), 'registry2-bench-'));
  const port = await freePort();
  const config = join(dir, 'config.yml');
  await writeFile(
    config,
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n`,
  );
  const proc = spawn('/usr/bin/docker-registry', ['serve', config], { env: cleanEnv(), stdio: ['ignore', 'ignore', 'ignore'] });
  const t = { name: 'registry:2', url: `http://127.0.0.1:${port}`, proc, dir };
  await waitReady(t.url, '/v2/', [200], { proc });
  return t;
}

async function stop(t: Target): Promise<void> {
  await stopProcess(t.proc);
  await rm(t.dir, { recursive: true, force: true });
}

async function peakRssMiB(t: Target): Promise<number> {
  const status = await readFile(`/proc/${t.proc.pid}/status`, 'utf8');
  const m = /VmHWM:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

async function currentRssMiB(t: Target): Promise<number> {
  const status = await readFile(`/proc/${t.proc.pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

/** A deterministic stream of `size` pseudo-random bytes and its digest, generated without holding it in memory. */
function blobSource(size: number, seed: Buffer): { stream: () => Readable; digest: string } {
  const block = Buffer.concat([seed, randomBytes(MiB - seed.length)]);
  const hash = createHash('sha256');
  for (let off = 0; off < size; off += block.length) hash.update(block.subarray(0, Math.min(block.length, size - off)));
  return {
    digest: `sha256:${hash.digest('hex')}`,
    stream: () =>
      Readable.from(
        (function* () {
          for (let off = 0; off < size; off += block.length) yield block.subarray(0, Math.min(block.length, size - off));
        })(),
      ),
  };
}

function request(url: string, options: http.RequestOptions, body?: Readable): Promise<{ status: number; headers: http.IncomingHttpHeaders; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, options, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, bytes }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body) body.pipe(req);
    else req.end();
  });
}

async function pushMonolithic(t: Target, repo: string, size: number, source: ReturnType<typeof blobSource>): Promise<number> {
  const start = process.hrtime.bigint();
  // registry:2 needs a session first; berth accepts the single-request POST too. Use POST + PUT for both so the
  // two servers do the same work.
  const post = await request(`${t.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  const loc = String(post.headers.location);
  const put = new URL(loc, t.url);
  put.searchParams.set('digest', source.digest);
  const res = await request(put.toString(), { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': size } }, source.stream());
  if (res.status !== 201) throw new Error(`${t.name}: push answered ${res.status}`);
  return Number(process.hrtime.bigint() - start) / 1e9;
}

async function pullBlob(t: Target, repo: string, digest: string): Promise<{ seconds: number; bytes: number }> {
  const start = process.hrtime.bigint();
  const res = await request(`${t.url}/v2/${repo}/blobs/${digest}`, { method: 'GET' });
  if (res.status !== 200) throw new Error(`${t.name}: blob GET answered ${res.status}`);
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, bytes: res.bytes };
}

async function putSmallBlob(t: Target, repo: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const post = await request(`${t.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  const put = new URL(String(post.headers.location), t.url);
  put.searchParams.set('digest', digest);
  const res = await request(put.toString(), { method: 'PUT', headers: { 'content-length': data.length } }, Readable.from([data]));
  if (res.status !== 201) throw new Error(`${t.name}: small blob push answered ${res.status}`);
  return digest;
}

async function manifestLoad(t: Target, repo: string): Promise<{ rps: number; p99: number; errors: number }> {
  const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const layer = randomBytes(1024);
  const cd = await putSmallBlob(t, repo, config);
  const ld = await putSmallBlob(t, repo, layer);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: ld, size: layer.length }],
    }),
  );
  const put = await request(`${t.url}/v2/${repo}/manifests/latest`, {
    method: 'PUT',
    headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': manifest.length },
  }, Readable.from([manifest]));
  if (put.status !== 201) throw new Error(`${t.name}: manifest PUT answered ${put.status}`);

  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const latencies: number[] = [];
  let errors = 0;
  const deadline = Date.now() + SECONDS * 1000;
  const worker = async () => {
    while (Date.now() < deadline) {
      const s = process.hrtime.bigint();
      const res = await request(`${t.url}/v2/${repo}/manifests/latest`, {
        agent,
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
      }).catch(() => null);
      if (!res || res.status !== 200) errors++;
      latencies.push(Number(process.hrtime.bigint() - s) / 1e6);
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: CONNECTIONS }, worker));
  const elapsed = (Date.now() - started) / 1000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  return { rps: latencies.length / elapsed, p99: latencies[Math.floor(latencies.length * 0.99)] ?? NaN, errors };
}

interface Result {
  server: string;
  pushMiBs: number;
  pullMiBs: number;
  manifestRps: number;
  manifestP99ms: number;
  idleRssMiB: number;
  peakRssMiB: number;
  peakRssAfterBigPushMiB: number;
}

async function benchTarget(t: Target): Promise<Result> {
  const source = blobSource(BLOB_MIB * MiB, randomBytes(32));
  const idle = await currentRssMiB(t);
  const pushSeconds = await pushMonolithic(t, 'bench/blob', BLOB_MIB * MiB, source);
  let pullSeconds = 0;
  const rounds = 3;
  for (let i = 0; i < rounds; i++) {
    const r = await pullBlob(t, 'bench/blob', source.digest);
    if (r.bytes !== BLOB_MIB * MiB) throw new Error(`${t.name}: pulled ${r.bytes} bytes`);
    pullSeconds += r.seconds;
  }
  const load = await manifestLoad(t, 'bench/manifest');
  if (load.errors > 0) process.stderr.write(`${t.name}: ${load.errors} manifest GET errors\n`);
  const peak = await peakRssMiB(t);
  const big = blobSource(BIG_MIB * MiB, randomBytes(32));
  await pushMonolithic(t, 'bench/big', BIG_MIB * MiB, big);
  const peakAfterBig = await peakRssMiB(t);
  return {
    server: t.name,
    pushMiBs: BLOB_MIB / pushSeconds,
    pullMiBs: (BLOB_MIB * rounds) / pullSeconds,
    manifestRps: load.rps,
    manifestP99ms: load.p99,
    idleRssMiB: idle,
    peakRssMiB: peak,
    peakRssAfterBigPushMiB: peakAfterBig,
  };
}

async function main(): Promise<void> {
  const results: Result[] = [];
  for (const start of [startBerth, startRegistry2]) {
    const t = await start();
    if (!t) continue;
    try {
      process.stderr.write(`benchmarking ${t.name} ...\n`);
      results.push(await benchTarget(t));
    } finally {
      await stop(t);
    }
  }
  const fmt = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '-');
  const rows = [
    ['server', `push ${BLOB_MIB} MiB (MiB/s)`, 'blob GET (MiB/s)', `manifest GET x${CONNECTIONS} (req/s)`, 'p99 (ms)', 'RSS idle (MiB)', 'RSS peak (MiB)', `RSS after ${BIG_MIB} MiB push`],
    ...results.map((r) => [r.server, fmt(r.pushMiBs), fmt(r.pullMiBs), fmt(r.manifestRps), fmt(r.manifestP99ms), fmt(r.idleRssMiB), fmt(r.peakRssMiB), fmt(r.peakRssAfterBigPushMiB)]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) process.stdout.write(`${r.map((c, i) => c.padEnd(widths[i]!)).join('  ')}\n`);
  const extras: Record<string, Record<string, number | string>> = {};
  for (const [name, run] of extraCases) {
    process.stderr.write(`benchmarking ${name} ...\n`);
    extras[name] = await run();
    process.stdout.write(`${name}: ${JSON.stringify(extras[name])}\n`);
  }
  const out = join(tmpdir(), 'bench-results.json');
  await writeFile(out, JSON.stringify({ date: new Date().toISOString(), results, extras }, null, 2));
  process.stderr.write(`results written to ${out}\n`);
}

await main();
