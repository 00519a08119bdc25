/**
 * `npm run bench`: berth beside Debian's docker-registry (CNCF Distribution 2.8, the registry:2 binary) in one run,
 * both on filesystem storage with their access logs on (written to a file each), measured the same way on loopback
 * with the rounds alternating between the two servers so drift on this shared machine cancels out. Each side's
 * median and the ratio berth ÷ registry:2 are printed.
 *
 * Cases (select with `--only push,get`; default all):
 * - `push`      monolithic push of BENCH_BLOB_MIB (256) MiB: POST, then PUT with the whole body; a new blob each
 *               run, from a separate client process (push-client.ts). MiB/s. Each server's first push after it
 *               started is its own row (first push after start); the rounds follow it.
 * - `chunked`   chunked push of that size: POST, one PATCH per BENCH_CHUNK_MIB (32) MiB, PUT; a new blob each run,
 *               from the same client process. MiB/s.
 * - `get`       blob GET of that size with curl, MiB/s.
 * - `manifest`  manifest GET by tag, 32 connections for BENCH_SECONDS (5) s with wrk: req/s and p99. Each
 *               server's first run of it is its own row; the rounds follow it.
 *               After these three, each server's peak RSS (VmHWM).
 * Beside each figure, each server's median CPU time per operation (per 1000 answers for manifests): on a shared
 * machine, the steadier measure of how much work a server does.
 * - `parallel`  8 parallel blob GETs with curl, aggregate MiB/s.
 * - `skopeo`    skopeo push and pull of a 512 MiB image (one fresh random layer each round), MiB/s; ⌈N/2⌉ rounds
 *               (skopeo is the slower side of both: one sample said more about the client's luck than the server).
 * - `big`       a BENCH_BIG_MIB (2048) MiB push: peak RSS before and after (memory stays flat with blob size).
 * - `s3`        berth on the S3 driver against the test S3 server (push, pull, peak RSS); berth only.
 *               BENCH_S3_LATENCY_MS adds a per-request latency to that server (a real S3's tens of ms);
 *               BENCH_S3_UPLOAD_CONCURRENCY sets berth's storage.s3.multipartuploadmaxconcurrency.
 * - `mirror`    berth as a pull-through cache of docker-registry: cold and warm pulls, 20 at once; and one cold
 *               and one warm pull through docker-registry as a pull-through cache of the same upstream.
 *
 * BENCH_BERTH_MAIN runs another build of berth (a `dist/src/cli/main.js` path), for before/after comparisons.
 * `--rounds N` (BENCH_ROUNDS, default 5) sets the rounds of push and get (manifest and skopeo run ⌈N/2⌉). Needs wrk and curl
 * (`apt-get install wrk curl`). Results also go to bench-results.json in the temp directory.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { BERTH_MAIN } from '../helpers/berth-process.js';
import { makeImageLayout } from '../helpers/oci-layout.js';
import { freePort } from '../helpers/ports.js';
import { cleanEnv, stopProcess, waitForChild, answersHttp } from '../helpers/process.js';
import { extraCases } from './cases.js';
import './mirror-bench.js';
import './s3-bench.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const BLOB_MIB = Number(process.env.BENCH_BLOB_MIB ?? 256);
const BIG_MIB = Number(process.env.BENCH_BIG_MIB ?? 2048);
const SKOPEO_MIB = Number(process.env.BENCH_SKOPEO_MIB ?? 512);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CHUNK_MIB = Number(process.env.BENCH_CHUNK_MIB ?? 32);
const CONNECTIONS = 32;
const PUSH_CLIENT = fileURLToPath(new URL('./push-client.js', import.meta.url));

const ALL_CASES = ['push', 'chunked', 'get', 'manifest', 'parallel', 'skopeo', 'big', 's3', 'mirror'] as const;
type CaseName = (typeof ALL_CASES)[number];

/** A server under test. */
interface Target {
  name: 'berth' | 'registry:2';
  url: string;
  host: string;
  proc: ChildProcess;
  dir: string;
}

async function spawnServer(
  name: Target['name'],
  dir: string,
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  port: number,
): Promise<Target> {
  // stdout and stderr (access log and application log) go to one file, as a deployment writing its logs would.
  const log = openSync(join(dir, 'server.log'), 'a');
  const proc = spawn(command, args, { env, stdio: ['ignore', log, log] });
  closeSync(log);
  const url = `http://127.0.0.1:${port}`;
  const state = await waitForChild(proc, () => answersHttp(url, '/v2/'), { timeoutMs: 20_000 });
  if (state !== 'ready') {
    await stopProcess(proc);
    throw new Error(`${name} did not start (${state}); see ${join(dir, 'server.log')}`);
  }
  return { name, url, host: `127.0.0.1:${port}`, proc, dir };
}

async function startBerth(): Promise<Target> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-bench-'));
  const port = await freePort();
  const env = cleanEnv({
    REGISTRY_HTTP_ADDR: `127.0.0.1:${port}`,
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: join(dir, 'data'),
    REGISTRY_LOG_LEVEL: 'info',
  });
  return spawnServer('berth', dir, process.execPath, [process.env.BENCH_BERTH_MAIN ?? BERTH_MAIN, 'serve'], env, port);
}

async function startRegistry2(): Promise<Target> {
  const dir = await mkdtemp(join(tmpdir(), 'registry2-bench-'));
  const port = await freePort();
  const config = join(dir, 'config.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: info',
      '  accesslog:',
      '    disabled: false',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${dir}/data`,
      '  delete:',
      '    enabled: true',
      // Its own metadata cache (blob descriptors in memory): berth caches links and blob sizes, so this side may too.
      '  cache:',
      '    blobdescriptor: inmemory',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
  );
  return spawnServer('registry:2', dir, '/usr/bin/docker-registry', ['serve', config], cleanEnv(), port);
}

async function stop(t: Target): Promise<void> {
  await stopProcess(t.proc);
  await rm(t.dir, { recursive: true, force: true });
}

async function memoryMiB(t: Target, field: 'VmHWM' | 'VmRSS'): Promise<number> {
  const status = await readFile(`/proc/${t.proc.pid}/status`, 'utf8');
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

/** CPU time (user + system) the process has used so far, ms (from /proc, 10 ms resolution). */
async function cpuMs(t: Target): Promise<number> {
  const stat = await readFile(`/proc/${t.proc.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of /proc/PID/stat, in clock ticks (100 per second).
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Samples per server, and the server CPU time (ms) each sample cost. */
type Samples = Map<string, number[]> & { cpu?: Map<string, number[]> };

/**
 * Runs `fn` for each target, `rounds` times, alternating which server goes first; returns the samples per server
 * and the server's CPU time per sample. CPU time is what each server spent, whatever else this shared machine ran
 * meanwhile: steadier than wall time when other work competes for the cores.
 */
async function alternate(targets: Target[], rounds: number, fn: (t: Target, round: number) => Promise<number>): Promise<Samples> {
  const samples: Samples = new Map<string, number[]>(targets.map((t) => [t.name, []]));
  const cpu = new Map<string, number[]>(targets.map((t) => [t.name, []]));
  samples.cpu = cpu;
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? targets : [...targets].reverse();
    for (const t of order) {
      // What the previous sample left to the disk (registry:2 writes through the page cache, so its blobs are still
      // being written back after its push answered) is written out first, not during the next server's sample.
      await run('sync');
      const before = await cpuMs(t);
      samples.get(t.name)!.push(await fn(t, round));
      cpu.get(t.name)!.push((await cpuMs(t)) - before);
    }
  }
  return samples;
}

// ---- cases -----------------------------------------------------------------------------------------------------

/** One monolithic push (or, with `chunk`, a chunked one) by the client process; MiB/s. Each call pushes a new blob. */
async function push(t: Target, repo: string, bytes: number, chunk?: number): Promise<{ mibs: number; digest: string }> {
  const args = [PUSH_CLIENT, t.url, repo, String(bytes), ...(chunk ? [String(chunk)] : [])];
  const { stdout } = await run(process.execPath, args, { maxBuffer: MiB });
  const r = JSON.parse(stdout) as { seconds: number; digest: string };
  return { mibs: bytes / MiB / r.seconds, digest: r.digest };
}

/** One blob GET with curl (body to /dev/null); MiB/s. */
async function curlGet(t: Target, repo: string, digest: string, bytes: number): Promise<number> {
  const { stdout } = await run('curl', [
    '-sS',
    '-o',
    '/dev/null',
    '-w',
    '%{http_code} %{size_download} %{time_total}',
    `${t.url}/v2/${repo}/blobs/${digest}`,
  ]);
  const [code, size, seconds] = stdout.trim().split(' ');
  if (code !== '200' || Number(size) !== bytes) throw new Error(`${t.name}: blob GET answered ${code} with ${size} bytes`);
  return bytes / MiB / Number(seconds);
}

/** Small blobs and a manifest tagged `latest` in `repo`, pushed with fetch (not timed). */
async function putManifest(t: Target, repo: string): Promise<void> {
  const putBlob = async (data: Buffer): Promise<string> => {
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    const post = await fetch(`${t.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    await post.arrayBuffer();
    const loc = new URL(post.headers.get('location') ?? '', t.url);
    loc.searchParams.set('digest', digest);
    const put = await fetch(loc, { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } });
    await put.arrayBuffer();
    if (put.status !== 201) throw new Error(`${t.name}: blob PUT answered ${put.status}`);
    return digest;
  };
  const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const layer = randomBytes(1024);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await putBlob(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: await putBlob(layer), size: layer.length }],
  });
  const res = await fetch(`${t.url}/v2/${repo}/manifests/latest`, {
    method: 'PUT',
    body: manifest,
    headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  await res.arrayBuffer();
  if (res.status !== 201) throw new Error(`${t.name}: manifest PUT answered ${res.status}`);
}

function wrkMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

/** wrk at 32 connections for SECONDS against a manifest GET by tag; req/s and p99 (ms). */
async function manifestLoad(t: Target, repo: string): Promise<{ rps: number; p99: number }> {
  const { stdout } = await run('wrk', [
    '-t1',
    `-c${CONNECTIONS}`,
    `-d${SECONDS}s`,
    '--latency',
    '-H',
    'Accept: application/vnd.oci.image.manifest.v1+json',
    `${t.url}/v2/${repo}/manifests/latest`,
  ]);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(stdout);
  const p99 = /^\s*99%\s+(\S+)/m.exec(stdout);
  const bad = /Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout);
  if (bad) throw new Error(`${t.name}: ${bad[1]} manifest GETs failed`);
  if (!rps || !p99) throw new Error(`${t.name}: cannot read wrk output:\n${stdout}`);
  return { rps: Number(rps[1]), p99: wrkMs(p99[1]!) };
}

/** 8 curl GETs of one blob at once; aggregate MiB/s over the wall time. */
async function parallelGet(t: Target, repo: string, digest: string, bytes: number): Promise<number> {
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: 8 }, () => curlGet(t, repo, digest, bytes)));
  return (8 * bytes) / MiB / (Number(process.hrtime.bigint() - start) / 1e9);
}

/** skopeo push of a fresh image with one SKOPEO_MIB layer, then a pull of it into an empty layout; MiB/s each. */
async function skopeoPushPull(t: Target, work: string): Promise<{ push: number; pull: number }> {
  const src = join(work, `src-${t.name.replace(/\W/g, '')}`);
  const dst = join(work, `dst-${t.name.replace(/\W/g, '')}`);
  try {
    await makeImageLayout(src, { layers: [SKOPEO_MIB * MiB], tag: 'v1' });
    const ref = `docker://${t.host}/bench/skopeo:v1`;
    let start = process.hrtime.bigint();
    await run('skopeo', ['copy', '-q', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:v1`, ref]);
    const pushSeconds = Number(process.hrtime.bigint() - start) / 1e9;
    start = process.hrtime.bigint();
    await run('skopeo', ['copy', '-q', '--preserve-digests', '--src-tls-verify=false', ref, `oci:${dst}:v1`]);
    const pullSeconds = Number(process.hrtime.bigint() - start) / 1e9;
    return { push: SKOPEO_MIB / pushSeconds, pull: SKOPEO_MIB / pullSeconds };
  } finally {
    await rm(src, { recursive: true, force: true });
    await rm(dst, { recursive: true, force: true });
  }
}

// ---- the run ---------------------------------------------------------------------------------------------------

interface Row {
  what: string;
  berth: number;
  registry2: number;
  /** Median server CPU time per sample, ms (where measured). */
  berthCpuMs?: number;
  registry2CpuMs?: number;
  /** Which way is better, for the ratio column. */
  better: 'higher' | 'lower';
  target?: string;
}

async function compare(cases: Set<CaseName>, rounds: number): Promise<Row[]> {
  const targets: Target[] = [];
  const rows: Row[] = [];
  const row = (what: string, samples: Samples, better: Row['better'], target?: string): void => {
    const r: Row = { what, berth: median(samples.get('berth') ?? []), registry2: median(samples.get('registry:2') ?? []), better };
    if (target) r.target = target;
    if (samples.cpu) {
      r.berthCpuMs = median(samples.cpu.get('berth') ?? []);
      r.registry2CpuMs = median(samples.cpu.get('registry:2') ?? []);
    }
    rows.push(r);
    const round = (xs: number[]) => xs.map((x) => Number(x.toFixed(1)));
    process.stderr.write(`  ${what}: ${JSON.stringify(Object.fromEntries([...samples].map(([k, v]) => [k, round(v)])))}\n`);
  };
  try {
    targets.push(await startBerth());
    targets.push(await startRegistry2());
    const bytes = BLOB_MIB * MiB;
    const last = new Map<string, string>();
    if (cases.has('push') || cases.has('get') || cases.has('parallel')) {
      if (cases.has('push')) {
        // Each server's first push after it started, on its own: berth's JIT and both servers' memory warm up there
        // (berth's first push ran at 55-90% of the median of its later ones). Reported apart, so the rounds below
        // compare servers that have each served one push, as a running registry has.
        process.stderr.write(`first push after start ...\n`);
        const cold = await alternate(targets, 1, async (t) => (await push(t, 'bench/cold', bytes)).mibs);
        row(`first push ${BLOB_MIB} MiB after start (MiB/s)`, cold, 'higher');
      }
      process.stderr.write(`push ${BLOB_MIB} MiB x${rounds} ...\n`);
      const pushes = await alternate(targets, cases.has('push') ? rounds : 1, async (t) => {
        const r = await push(t, 'bench/blob', bytes);
        last.set(t.name, r.digest);
        return r.mibs;
      });
      if (cases.has('push')) row(`monolithic push ${BLOB_MIB} MiB (MiB/s)`, pushes, 'higher', '≥ 3x');
    }
    if (cases.has('chunked')) {
      process.stderr.write(`chunked push ${BLOB_MIB} MiB in ${CHUNK_MIB} MiB PATCHes x${rounds} ...\n`);
      const chunked = await alternate(targets, rounds, async (t) => (await push(t, 'bench/chunked', bytes, CHUNK_MIB * MiB)).mibs);
      row(`chunked push ${BLOB_MIB} MiB, ${CHUNK_MIB} MiB PATCHes (MiB/s)`, chunked, 'higher');
    }
    if (cases.has('get')) {
      process.stderr.write(`blob GET ${BLOB_MIB} MiB x${rounds} ...\n`);
      row(
        `blob GET ${BLOB_MIB} MiB (MiB/s)`,
        await alternate(targets, rounds, (t) => curlGet(t, 'bench/blob', last.get(t.name)!, bytes)),
        'higher',
        '≥ 1.2x',
      );
    }
    if (cases.has('manifest')) {
      process.stderr.write(`manifest GET by tag x${CONNECTIONS} connections ...\n`);
      for (const t of targets) await putManifest(t, 'bench/manifest');
      // Each server's first seconds of this load, on their own: V8 compiles berth's request path while it runs (the
      // first run of a fresh berth answered 10-20% fewer requests than the runs after it). Reported apart, as the
      // first push is, so the rounds below compare servers that have each served one run of it.
      // Server CPU per 1000 answers, from each run's CPU time and req/s (the samples of `runs`).
      const perThousand = (runs: Samples): Map<string, number[]> =>
        new Map([...(runs.cpu ?? [])].map(([n, ms]) => [n, ms.map((m, i) => (m / (runs.get(n)![i]! * SECONDS)) * 1000)]));
      const first = await alternate(targets, 1, async (t) => (await manifestLoad(t, 'bench/manifest')).rps);
      first.cpu = perThousand(first);
      row(`manifest GET by tag, first ${SECONDS} s of it (req/s)`, first, 'higher');
      const loads = new Map<string, Array<{ rps: number; p99: number }>>(targets.map((t) => [t.name, []]));
      const loadCpu = await alternate(targets, Math.ceil(rounds / 2), async (t) => {
        const r = await manifestLoad(t, 'bench/manifest');
        loads.get(t.name)!.push(r);
        return r.rps;
      });
      const pick = (k: 'rps' | 'p99'): Samples => new Map([...loads].map(([n, xs]) => [n, xs.map((x) => x[k])]));
      const rps: Samples = pick('rps');
      rps.cpu = perThousand(loadCpu);
      row(`manifest GET by tag, ${CONNECTIONS} connections (req/s)`, rps, 'higher', '≥ 10x');
      row('  p99 latency (ms)', pick('p99'), 'lower', 'lower');
    }
    if (cases.has('push') || cases.has('get') || cases.has('manifest')) {
      const peaks = new Map<string, number[]>();
      for (const t of targets) peaks.set(t.name, [await memoryMiB(t, 'VmHWM')]);
      row('peak RSS through the above (MiB)', peaks, 'lower', '≤ 120 MiB');
    }
    if (cases.has('parallel')) {
      process.stderr.write(`8 parallel blob GETs ...\n`);
      row(
        `8 parallel GETs of ${BLOB_MIB} MiB, aggregate (MiB/s)`,
        await alternate(targets, 3, (t) => parallelGet(t, 'bench/blob', last.get(t.name)!, bytes)),
        'higher',
      );
    }
    if (cases.has('skopeo')) {
      process.stderr.write(`skopeo push and pull of a ${SKOPEO_MIB} MiB image ...\n`);
      const work = await mkdtemp(join(tmpdir(), 'berth-bench-skopeo-'));
      try {
        const results = new Map<string, Array<{ push: number; pull: number }>>(targets.map((t) => [t.name, []]));
        await alternate(targets, Math.ceil(rounds / 2), async (t) => {
          const r = await skopeoPushPull(t, work);
          results.get(t.name)!.push(r);
          return r.push;
        });
        const pick = (k: 'push' | 'pull') => new Map([...results].map(([n, xs]) => [n, xs.map((x) => x[k])]));
        row(`skopeo push ${SKOPEO_MIB} MiB image (MiB/s)`, pick('push'), 'higher');
        row(`skopeo pull ${SKOPEO_MIB} MiB image (MiB/s)`, pick('pull'), 'higher');
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    }
    if (cases.has('big')) {
      process.stderr.write(`push ${BIG_MIB} MiB ...\n`);
      const before = new Map<string, number[]>();
      const after = new Map<string, number[]>();
      const speed = await alternate(targets, 1, async (t) => {
        before.set(t.name, [await memoryMiB(t, 'VmHWM')]);
        const r = await push(t, 'bench/big', BIG_MIB * MiB);
        after.set(t.name, [await memoryMiB(t, 'VmHWM')]);
        return r.mibs;
      });
      row(`push ${BIG_MIB} MiB (MiB/s)`, speed, 'higher');
      row(`  peak RSS before it (MiB)`, before, 'lower');
      row(`  peak RSS after it (MiB)`, after, 'lower', 'no rise');
    }
  } finally {
    for (const t of targets) await stop(t);
  }
  return rows;
}

function printTable(rows: Row[]): void {
  const fmt = (n: number) => (Number.isFinite(n) ? (n >= 100 ? n.toFixed(0) : n.toFixed(1)) : '-');
  const table = [
    ['', 'berth', 'registry:2', 'berth÷r2', 'target', 'server CPU ms/op: berth', 'registry:2'],
    ...rows.map((r) => {
      const ratio = r.berth / r.registry2;
      const cpu = (n: number | undefined) => (n === undefined ? '' : fmt(n));
      return [
        r.what,
        fmt(r.berth),
        fmt(r.registry2),
        Number.isFinite(ratio) ? `${ratio.toFixed(2)}x` : '-',
        r.target ?? '',
        cpu(r.berthCpuMs),
        cpu(r.registry2CpuMs),
      ];
    }),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  for (const r of table) process.stdout.write(`${r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')}\n`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { only: { type: 'string' }, rounds: { type: 'string' } } });
  const only = values.only ? values.only.split(',').map((s) => s.trim()) : [...ALL_CASES];
  for (const c of only) {
    if (!(ALL_CASES as readonly string[]).includes(c)) throw new Error(`unknown case ${c}; cases: ${ALL_CASES.join(', ')}`);
  }
  const cases = new Set(only as CaseName[]);
  const rounds = Number(values.rounds ?? process.env.BENCH_ROUNDS ?? 5);
  for (const tool of ['wrk', 'curl']) {
    if (!['/usr/bin/', '/usr/local/bin/'].some((d) => existsSync(d + tool))) throw new Error(`the bench needs ${tool} (apt-get install ${tool})`);
  }
  if (!existsSync('/usr/bin/docker-registry')) throw new Error('the bench needs /usr/bin/docker-registry (apt-get install docker-registry)');

  const compared = ALL_CASES.filter((c) => c !== 's3' && c !== 'mirror' && cases.has(c));
  const rows = compared.length > 0 ? await compare(cases, rounds) : [];
  if (rows.length > 0) printTable(rows);
  const extras: Record<string, Record<string, number | string>> = {};
  for (const [name, runCase] of extraCases) {
    if (!cases.has(name as CaseName)) continue;
    process.stderr.write(`${name} ...\n`);
    extras[name] = await runCase();
    process.stdout.write(`${name}: ${JSON.stringify(extras[name])}\n`);
  }
  const out = join(tmpdir(), 'bench-results.json');
  await writeFile(out, JSON.stringify({ date: new Date().toISOString(), rounds, rows, extras }, null, 2));
  process.stderr.write(`results written to ${out}\n`);
}

await main();
