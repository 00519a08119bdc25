import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { spawnBerth, type BerthProcess } from '../helpers/berth-process.js';
import { startDockerRegistry, type DockerRegistry } from '../helpers/docker-registry.js';
import { tempDir } from '../helpers/ports.js';
import { startRedis } from '../helpers/redis.js';
import { s3RegistryEnv, startS3Server } from '../helpers/s3-server.js';
import { accessLog, eventually, startGateProxy } from './helpers.js';

/**
 * Issue 15, a mirror for a fleet, with berth as real processes pulling through Debian's docker-registry:
 * - a cold fill is written once, into storage's upload area: a layer far larger than a 64 MiB tmpfs given as the
 *   temp directory pulls through without the tmpfs filling;
 * - three replicas sharing storage and Redis fetch a blob from the upstream once for 20 concurrent clients;
 * - a filler killed mid-fill is taken over by another replica and its followers' clients still get the right bytes.
 */

const run = promisify(execFile);
const MiB = 1024 * 1024;
const REPO = 'fleet/big';

interface BigBlob {
  path: string;
  digest: string;
  size: number;
}

/** A file of `mib` MiB of random bytes (written in 1 MiB steps) and its digest. */
async function bigBlob(dir: string, mib: number): Promise<BigBlob> {
  const path = join(dir, `blob-${mib}`);
  const file = await open(path, 'w');
  const hash = createHash('sha256');
  try {
    for (let i = 0; i < mib; i++) {
      const chunk = randomBytes(MiB);
      hash.update(chunk);
      await file.write(chunk);
    }
  } finally {
    await file.close();
  }
  return { path, digest: `sha256:${hash.digest('hex')}`, size: mib * MiB };
}

/** Pushes the file as one blob of `repo` (POST, then a streamed monolithic PUT). */
async function pushBlob(registry: DockerRegistry, repo: string, blob: BigBlob): Promise<void> {
  const start = await fetch(`${registry.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  if (start.status !== 202) throw new Error(`upload start: ${start.status}`);
  const location = new URL(start.headers.get('location') ?? '', registry.url);
  location.searchParams.set('digest', blob.digest);
  const put = await fetch(location, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
    body: Readable.toWeb(createReadStream(blob.path)) as ReadableStream,
    duplex: 'half',
  } as RequestInit);
  if (put.status !== 201) throw new Error(`upload: ${put.status} ${await put.text()}`);
}

/** What a client got for a blob GET: status, the digest and size of the body, or the error that ended it. */
interface Pulled {
  status: number;
  digest?: string;
  size: number;
  error?: string;
}

/** GETs a blob and hashes the body as it streams; `progress` sees the bytes received so far. */
async function pull(base: string, digest: string, progress?: (bytes: number) => void): Promise<Pulled> {
  let size = 0;
  try {
    const res = await fetch(`${base}/v2/${REPO}/blobs/${digest}`);
    const hash = createHash('sha256');
    if (!res.body) return { status: res.status, size };
    for await (const part of res.body as AsyncIterable<Uint8Array>) {
      hash.update(part);
      size += part.byteLength;
      progress?.(size);
    }
    return { status: res.status, digest: `sha256:${hash.digest('hex')}`, size };
  } catch (err) {
    return { status: 0, size, error: (err as Error).message };
  }
}

/** GETs of the blob in the upstream's access log. */
function upstreamBlobGets(registry: DockerRegistry, digest: string): number {
  return accessLog(registry).filter((e) => e.method === 'GET' && e.path === `/v2/${REPO}/blobs/${digest}`).length;
}

/** Files left in the cache repository's upload area. */
async function uploadsLeft(root: string): Promise<string[]> {
  const dir = join(root, 'docker/registry/v2/repositories', REPO, '_uploads');
  return readdir(dir, { recursive: true }).catch(() => []);
}

function berthEnv(root: string, upstream: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: root,
    REGISTRY_PROXY_REMOTEURL: upstream,
    REGISTRY_LOG_LEVEL: 'warn',
    ...extra,
  };
}

// The cases run two at a time (t.jobs = 2), each with its own upstream, Redis, storage and berth processes. The
// killed filler's case comes first: most of its time is waiting for the dead filler's lease to expire (its TTL),
// while the others hash and stream bytes.
t.jobs = 2;

t.test('a filler killed mid-fill: another replica takes over and the other replicas’ clients get the right bytes', async (t) => {
  const dir = await tempDir(t, 'berth-fleet-kill-');
  const blob = await bigBlob(dir, 64);
  const registry = await startDockerRegistry(t, { rootDirectory: await tempDir(t, 'berth-fleet-up-') });
  await pushBlob(registry, REPO, blob);
  const gate = await startGateProxy(t, registry.url);
  const redis = await startRedis(t);
  const root = await tempDir(t, 'berth-fleet-root-');
  const [a, b, c] = (await replicas(t, root, gate.url, redis.addr)) as [BerthProcess, BerthProcess, BerthProcess];
  const isBlobGet = (m: string, p: string) => m === 'GET' && p === `/v2/${REPO}/blobs/${blob.digest}`;

  // A's fill stops after 16 MiB (the upstream response is held there).
  gate.hold(isBlobGet, 16 * MiB);
  const onA = pull(a.url, blob.digest);
  t.ok(await eventually(() => gate.forwarded() >= 16 * MiB, 60_000), 'A is filling');
  // Clients of B and C follow A's fill through storage and get its first bytes.
  const progress = [0, 0, 0, 0];
  const followers = [b, c, b, c].map((node, i) => pull(node.url, blob.digest, (n) => (progress[i] = n)));
  t.ok(await eventually(() => progress.every((n) => n >= 8 * MiB), 60_000), `the followers' clients got bytes of A's fill (${progress.join(', ')})`);
  t.equal(gate.requests.filter((r) => isBlobGet(r.method, r.path)).length, 1, 'only A asked the upstream so far');

  a.proc.kill('SIGKILL');
  await a.exited;
  const [fromA, ...others] = await Promise.all([onA, ...followers]);
  t.not(fromA.digest, blob.digest, `A's own client did not get a complete blob (${fromA.size} bytes${fromA.error ? `, ${fromA.error}` : ''})`);
  for (const [i, r] of others.entries()) {
    t.match(r, { status: 200, digest: blob.digest, size: blob.size }, `client ${i + 1} of berth ${i % 2 === 0 ? 'B' : 'C'} got the blob`);
  }
  t.equal(gate.requests.filter((r) => isBlobGet(r.method, r.path)).length, 2, 'one more upstream GET: a single replica took over');
  t.same(await leases(redis.port), [], 'no fill lease is left in Redis');
  t.same(await uploadsLeft(root), [], "the dead filler's upload file was removed, nothing else is left");
  const again = await pull(b.url, blob.digest);
  t.equal(again.digest, blob.digest, 'the blob is committed');
  const againC = await pull(c.url, blob.digest);
  t.equal(againC.digest, blob.digest, 'and served by every replica');
  t.equal(gate.requests.filter((r) => isBlobGet(r.method, r.path)).length, 2, 'from storage');
  gate.release();
});

t.test('a cold fill of a layer far larger than the temp directory (a 64 MiB tmpfs) never spools it there', async (t) => {
  const dir = await tempDir(t, 'berth-fleet-tmpfs-');
  const small = join(dir, 'tmp');
  await mkdir(small);
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', small]);
  } catch (err) {
    t.plan(0, `cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): ${(err as Error).message.split('\n')[0]}`);
    return;
  }
  t.teardown(async () => {
    await run('umount', ['-l', small]).catch(() => undefined);
  });
  const blob = await bigBlob(dir, 192);
  const registry = await startDockerRegistry(t, { rootDirectory: await tempDir(t, 'berth-fleet-up-') });
  await pushBlob(registry, REPO, blob);
  await rm(blob.path);
  const root = await tempDir(t, 'berth-fleet-root-');
  const berth = await spawnBerth(t, berthEnv(root, registry.url, { TMPDIR: small }), { name: 'berth (tmpfs TMPDIR)', timeoutMs: 60_000 });

  const before = await statfs(small);
  const usedBefore = (before.blocks - before.bfree) * before.bsize;
  let maxUsed = 0;
  let maxFiles = 0;
  let samples = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const s = await statfs(small);
      maxUsed = Math.max(maxUsed, (s.blocks - s.bfree) * s.bsize - usedBefore);
      maxFiles = Math.max(maxFiles, (await readdir(small, { recursive: true })).length);
      samples++;
      await new Promise((r) => setTimeout(r, 25));
    }
  })();
  let received = 0;
  const got = await pull(berth.url, blob.digest, (n) => (received = n));
  sampling = false;
  await sampler;

  t.equal(got.status, 200, 'the cold pull answers 200');
  t.equal(got.size, blob.size, `the client got all ${blob.size} bytes`);
  t.equal(got.digest, blob.digest, 'and they are the blob');
  t.ok(received === blob.size && samples > 5, `the temp directory was looked at during the pull (${samples} samples)`);
  t.ok(maxUsed < 4 * MiB, `the tmpfs stayed (near) empty: at most ${maxUsed} bytes used during the pull`);
  t.equal(maxFiles, 0, 'no file appeared in the temp directory');
  t.equal(upstreamBlobGets(registry, blob.digest), 1, 'one upstream GET');
  t.same(await uploadsLeft(root), [], 'nothing is left in the upload area');
  const again = await pull(berth.url, blob.digest);
  t.equal(again.digest, blob.digest, 'the blob is cached');
  t.equal(upstreamBlobGets(registry, blob.digest), 1, 'and served from the cache');
});

/** Three replicas on one storage root and one Redis, in front of `upstream`. */
async function replicas(t: Test, root: string, upstream: string, redisAddr: string): Promise<BerthProcess[]> {
  const env = berthEnv(root, upstream, { REGISTRY_REDIS_ADDR: redisAddr });
  const out: BerthProcess[] = [];
  for (const name of ['A', 'B', 'C']) out.push(await spawnBerth(t, env, { name: `berth ${name}`, graceMs: 2000, timeoutMs: 60_000 }));
  return out;
}

/** The fill leases left in Redis. */
async function leases(redisPort: number): Promise<string[]> {
  const { stdout } = await run('redis-cli', ['-p', String(redisPort), '--scan', '--pattern', '*fill:*']);
  return stdout.split('\n').filter(Boolean);
}

t.test('three replicas with Redis: 20 concurrent clients of one cold blob cause one upstream GET', async (t) => {
  const dir = await tempDir(t, 'berth-fleet-3-');
  const blob = await bigBlob(dir, 48);
  const registry = await startDockerRegistry(t, { rootDirectory: await tempDir(t, 'berth-fleet-up-') });
  await pushBlob(registry, REPO, blob);
  const redis = await startRedis(t);
  const root = await tempDir(t, 'berth-fleet-root-');
  const nodes = await replicas(t, root, registry.url, redis.addr);

  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => pull((nodes[i % 3] as BerthProcess).url, blob.digest)));
  for (const [i, r] of results.entries()) {
    if (r.status !== 200 || r.digest !== blob.digest) t.fail(`client ${i} (berth ${'ABC'[i % 3]}) got ${JSON.stringify(r)}`);
  }
  t.equal(results.filter((r) => r.status === 200 && r.digest === blob.digest && r.size === blob.size).length, 20, 'all 20 clients got the blob');
  t.equal(upstreamBlobGets(registry, blob.digest), 1, 'Distribution saw one GET of the blob');
  t.same(await leases(redis.port), [], 'no fill lease is left in Redis');
  t.same(await uploadsLeft(root), [], 'nothing is left in the upload area');
  const metrics = await Promise.all(nodes.map((n) => metric(n, 'berth_proxy_upstream_fetched_bytes_total')));
  t.equal(
    metrics.reduce((a, b) => a + b, 0),
    blob.size,
    `the replicas together fetched the blob's bytes once (${metrics.join(', ')})`,
  );
  for (const n of nodes) t.equal(await metric(n, 'berth_proxy_fills_in_progress'), 0, `${n.name}: no fill left in progress`);
  const counted = await Promise.all(
    nodes.map(async (n) => (await metric(n, 'berth_proxy_cache_misses_total')) + (await metric(n, 'berth_proxy_cache_hits_total'))),
  );
  t.equal(
    counted.reduce((a, b) => a + b, 0),
    20,
    'each of the 20 requests counted once, as a cache miss or hit',
  );
});

/** The sum of a metric's samples (every label set) on a replica's /metrics. */
async function metric(node: BerthProcess, name: string): Promise<number> {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^(\w+)(?:\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) sum += Number(m[2]);
  }
  return sum;
}

t.test('on S3 (an upload cannot be read before it is completed) clients of a fill get the blob once it is committed', async (t) => {
  const dir = await tempDir(t, 'berth-fleet-s3-');
  const blob = await bigBlob(dir, 24);
  const registry = await startDockerRegistry(t, { rootDirectory: await tempDir(t, 'berth-fleet-up-') });
  await pushBlob(registry, REPO, blob);
  const s3 = await startS3Server(t);
  const redis = await startRedis(t);
  const env = { ...berthEnv('', registry.url, { REGISTRY_REDIS_ADDR: redis.addr }), ...s3RegistryEnv(s3) };
  delete env.REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY;
  const a = await spawnBerth(t, env, { name: 'berth A (s3)', timeoutMs: 60_000 });
  const b = await spawnBerth(t, env, { name: 'berth B (s3)', timeoutMs: 60_000 });
  const results = await Promise.all(Array.from({ length: 6 }, (_, i) => pull((i % 2 === 0 ? a : b).url, blob.digest)));
  t.same(
    results.map((r) => `${r.status} ${r.size} ${r.digest}`),
    Array.from({ length: 6 }, () => `200 ${blob.size} ${blob.digest}`),
    'every client of both replicas got the blob',
  );
  t.equal(upstreamBlobGets(registry, blob.digest), 1, 'one upstream GET');
  t.same(await leases(redis.port), [], 'no fill lease is left in Redis');
  t.same(s3.uploads(), [], 'no multipart upload is left');
  t.same(
    s3.keys().filter((k) => k.includes('/_uploads/')),
    [],
    'nothing is left in the upload area',
  );
});
