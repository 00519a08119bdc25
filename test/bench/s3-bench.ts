/**
 * The S3 case of `npm run bench` (issue 3: "push and pull of a 256 MiB blob and peak RSS while pushing a 1 GiB blob
 * (must stay flat, ≤ 150 MiB)"). A berth process stores into the strict S3-protocol test server on loopback; blobs
 * are pushed as POST + PUT with the whole body streamed, and pulled with redirects disabled so the bytes flow through
 * berth. BENCH_BLOB_MIB / BENCH_BIG_MIB change the sizes.
 *
 * Loopback S3 answers in microseconds; a real S3 takes tens of milliseconds per request, which is what parallel part
 * uploads hide. BENCH_S3_LATENCY_MS (default 0) makes the test server wait that long before handling each request.
 * BENCH_S3_UPLOAD_CONCURRENCY sets berth's `storage.s3.multipartuploadmaxconcurrency` (default: berth's own).
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { Readable } from 'node:stream';
import { spawnBerth, type BerthProcess } from '../helpers/berth-process.js';
import { s3RegistryEnv, startS3Server, type TeardownHost } from '../helpers/s3-server.js';
import { extraCases, type BenchCase } from './cases.js';

const MiB = 1024 * 1024;
/** The bound on the server's peak RSS while a 1 GiB blob is pushed. */
const RSS_LIMIT_MIB = 150;

/** `size` bytes cycling through one random MiB, with their digest, generated without holding them in memory. */
function blobSource(size: number): { stream: () => Readable; digest: string } {
  const block = randomBytes(MiB);
  const pieces = function* (): Generator<Buffer> {
    for (let off = 0; off < size; off += block.length) yield block.subarray(0, Math.min(block.length, size - off));
  };
  const hash = createHash('sha256');
  for (const p of pieces()) hash.update(p);
  return { digest: `sha256:${hash.digest('hex')}`, stream: () => Readable.from(pieces()) };
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  bytes: number;
  sha256: string;
}

function send(url: string, method: string, headers: http.OutgoingHttpHeaders = {}, body?: Readable): Promise<Reply> {
  return new Promise<Reply>((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        hash.update(c);
        bytes += c.length;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, bytes, sha256: `sha256:${hash.digest('hex')}` }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body) body.pipe(req);
    else req.end();
  });
}

/** VmHWM (peak) or VmRSS (current) of a process, in MiB. */
async function memoryMiB(pid: number, field: 'VmHWM' | 'VmRSS'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Pushes a blob as POST + PUT with the whole body; returns the seconds it took. */
async function push(url: string, repo: string, size: number, source: ReturnType<typeof blobSource>): Promise<number> {
  const start = process.hrtime.bigint();
  const post = await send(`${url}/v2/${repo}/blobs/uploads/`, 'POST');
  if (post.status !== 202) throw new Error(`s3 bench: POST answered ${post.status}`);
  const put = new URL(String(post.headers.location), url);
  put.searchParams.set('digest', source.digest);
  const res = await send(put.href, 'PUT', { 'content-type': 'application/octet-stream', 'content-length': size }, source.stream());
  if (res.status !== 201) throw new Error(`s3 bench: PUT answered ${res.status}`);
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Starts `berth serve` on the S3 server; resolves once /readyz answers 200. */
function startBerthOnS3(s3: Awaited<ReturnType<typeof startS3Server>>, uploadConcurrency: string | undefined): Promise<BerthProcess> {
  return spawnBerth(
    undefined,
    {
      ...s3RegistryEnv(s3),
      ...(uploadConcurrency ? { REGISTRY_STORAGE_S3_MULTIPARTUPLOADMAXCONCURRENCY: uploadConcurrency } : {}),
      REGISTRY_LOG_LEVEL: 'warn',
      REGISTRY_LOG_ACCESSLOG_DISABLED: 'true',
      REGISTRY_STORAGE_REDIRECT_DISABLE: 'true',
      REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED: 'false',
    },
    { name: 's3 bench: berth', inheritStderr: true },
  );
}

/** The S3 benchmark: push/pull MiB/s of a BENCH_BLOB_MIB blob and the server's peak RSS while pushing BENCH_BIG_MIB. */
export const s3Bench: BenchCase = async () => {
  const blobMiB = Number(process.env.BENCH_BLOB_MIB ?? 256);
  const bigMiB = Number(process.env.BENCH_BIG_MIB ?? 1024);
  const latencyMs = Number(process.env.BENCH_S3_LATENCY_MS ?? 0);
  const uploadConcurrency = process.env.BENCH_S3_UPLOAD_CONCURRENCY;
  const teardowns: Array<() => unknown> = [];
  const host: TeardownHost = { teardown: (fn) => teardowns.push(fn) };
  let berth: BerthProcess | undefined;
  try {
    const s3 = await startS3Server(host, { latencyMs });
    berth = await startBerthOnS3(s3, uploadConcurrency);
    const pid = berth.proc.pid ?? 0;
    const idle = await memoryMiB(pid, 'VmRSS');

    const blob = blobSource(blobMiB * MiB);
    const pushSeconds = await push(berth.url, 'bench/s3', blobMiB * MiB, blob);
    const pullStart = process.hrtime.bigint();
    const pulled = await send(`${berth.url}/v2/bench/s3/blobs/${blob.digest}`, 'GET');
    const pullSeconds = Number(process.hrtime.bigint() - pullStart) / 1e9;
    if (pulled.status !== 200 || pulled.sha256 !== blob.digest) throw new Error(`s3 bench: pull answered ${pulled.status}, ${pulled.bytes} bytes`);
    const peakBefore = await memoryMiB(pid, 'VmHWM');

    // RSS sampled every 50 ms while the big blob goes in (VmHWM alone also covers the earlier phases).
    const big = blobSource(bigMiB * MiB);
    let sampledPeak = 0;
    const sampler = setInterval(() => {
      memoryMiB(pid, 'VmRSS').then(
        (m) => (sampledPeak = Math.max(sampledPeak, m)),
        () => undefined,
      );
    }, 50);
    let bigSeconds: number;
    try {
      bigSeconds = await push(berth.url, 'bench/s3-big', bigMiB * MiB, big);
    } finally {
      clearInterval(sampler);
    }
    const hwm = await memoryMiB(pid, 'VmHWM');
    return {
      'S3 latency per request (ms)': latencyMs,
      'multipartuploadmaxconcurrency': uploadConcurrency ?? 'default',
      [`push ${blobMiB} MiB (MiB/s)`]: Number((blobMiB / pushSeconds).toFixed(1)),
      [`pull ${blobMiB} MiB (MiB/s)`]: Number((blobMiB / pullSeconds).toFixed(1)),
      [`push ${bigMiB} MiB (MiB/s)`]: Number((bigMiB / bigSeconds).toFixed(1)),
      'RSS idle (MiB)': Number(idle.toFixed(1)),
      'RSS peak before big push (MiB)': Number(peakBefore.toFixed(1)),
      [`RSS peak while pushing ${bigMiB} MiB (MiB, sampled)`]: Number(sampledPeak.toFixed(1)),
      'VmHWM at end (MiB)': Number(hwm.toFixed(1)),
      [`flat (≤ ${RSS_LIMIT_MIB} MiB)`]: hwm <= RSS_LIMIT_MIB ? 'yes' : 'NO',
    };
  } finally {
    await berth?.stop();
    for (const fn of teardowns.reverse()) await fn();
  }
};

extraCases.set('s3', s3Bench);
