import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { spawnBerth, type BerthProcess } from '../helpers/berth-process.js';
import { tempDir } from '../helpers/ports.js';
import { startRedis } from '../helpers/redis.js';
import { sha256 } from '../helpers/digest.js';

/**
 * Issue 2: "Two berth processes sharing one storage directory and one Redis complete a chunked upload whose POST,
 * PATCHes and PUT alternate between them (test it with real processes)."
 */

const REPO = 'shared/blob-test';

/** Starts `berth serve` on `root` and the Redis at `redisAddr`, configured by environment only; waits for `/readyz`. */
function startBerthProcess(t: Test, root: string, redisAddr: string): Promise<BerthProcess> {
  return spawnBerth(t, {
    REGISTRY_HTTP_SECRET: 'shared-secret-of-both-instances',
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: root,
    REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED: 'false',
    REGISTRY_REDIS_ADDR: redisAddr,
    REGISTRY_LOG_LEVEL: 'warn',
  });
}

/** A chunk request via node:http so the body can be sent in parts; resolves with status and headers. */
function patchInParts(
  url: string,
  body: Buffer,
  headers: Record<string, string>,
  gate: Promise<void>,
): { started: Promise<void>; done: Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> } {
  let markStarted: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (markStarted = resolve));
  const done = new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>((resolve, reject) => {
    const req = httpRequest(url, { method: 'PATCH', headers: { ...headers, 'Content-Length': String(body.length) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    const half = Math.floor(body.length / 2);
    req.write(body.subarray(0, half), () => markStarted());
    gate.then(
      () => {
        if (!req.destroyed) req.end(body.subarray(half));
      },
      (err: unknown) => req.destroy(err instanceof Error ? err : new Error(String(err))),
    );
  });
  return { started, done };
}

/** GETs a blob and returns its status, digest header and the sha256 of the bytes received. */
async function getBlob(url: string, digest: string): Promise<{ status: number; header: string | null; sha: string; size: number }> {
  const res = await fetch(`${url}/v2/${REPO}/blobs/${digest}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: res.status, header: res.headers.get('docker-content-digest'), sha: sha256(bytes), size: bytes.length };
}

t.test('two berth processes share one storage directory and one Redis', async (t) => {
  const redis = await startRedis(t);
  const root = await tempDir(t, 'berth-e2e-shared-');
  const a = await startBerthProcess(t, root, redis.addr);
  const b = await startBerthProcess(t, root, redis.addr);
  const nodes = [a, b];

  await t.test('a chunked upload alternating between the processes', async (t) => {
    const blob = randomBytes(3 * 1024 * 1024 + 12345);
    const digest = sha256(blob);
    const cuts = [0, 1 << 20, 2 << 20, 3 << 20, blob.length];

    const post = await fetch(`${a.url}/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
    t.equal(post.status, 202, 'POST on A starts a session');
    let location = post.headers.get('location') ?? '';
    t.match(location, new RegExp(`^(https?://[^/]+)?/v2/${REPO}/blobs/uploads/`), 'POST answers a Location');

    // PATCH chunks alternate: B, A, B; each must continue exactly where the other process stopped.
    for (let i = 0; i < cuts.length - 2; i++) {
      const node = nodes[(i + 1) % 2] as BerthProcess;
      const start = cuts[i] as number;
      const end = cuts[i + 1] as number;
      const res = await fetch(new URL(location, node.url), {
        method: 'PATCH',
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${start}-${end - 1}` },
        body: blob.subarray(start, end),
      });
      t.equal(res.status, 202, `PATCH chunk ${i} (${start}-${end - 1}) on ${node === a ? 'A' : 'B'}`);
      t.equal(res.headers.get('range'), `0-${end - 1}`, `Range after chunk ${i}`);
      location = res.headers.get('location') ?? location;
    }

    // Spec: "If a chunk is uploaded out of order, the registry MUST respond with a 416": a repeat of the first
    // chunk (written through B) sent to A is refused, and A reports the offset B left.
    const repeat = await fetch(new URL(location, a.url), {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `0-${(cuts[1] as number) - 1}` },
      body: blob.subarray(0, cuts[1]),
    });
    t.equal(repeat.status, 416, 'a repeated chunk on the other process is refused with 416');
    t.equal(repeat.headers.get('range'), `0-${(cuts[cuts.length - 2] as number) - 1}`, 'and the 416 tells where to continue');

    const status = await fetch(new URL(location, b.url));
    t.equal(status.status, 204, 'upload status on B');
    t.equal(status.headers.get('range'), `0-${(cuts[cuts.length - 2] as number) - 1}`, 'B sees the offset A wrote');

    // The last chunk travels with the closing PUT, on A.
    const lastStart = cuts[cuts.length - 2] as number;
    const put = await fetch(`${new URL(location, a.url).href}${location.includes('?') ? '&' : '?'}digest=${digest}`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${lastStart}-${blob.length - 1}` },
      body: blob.subarray(lastStart),
    });
    t.equal(put.status, 201, 'PUT with the last chunk on A completes the upload');
    t.equal(put.headers.get('docker-content-digest'), digest);

    for (const node of nodes) {
      const got = await getBlob(node.url, digest);
      t.same(got, { status: 200, header: digest, sha: digest, size: blob.length }, `blob readable from ${node === a ? 'A' : 'B'}`);
    }
  });

  await t.test('POST, PATCHes and PUT without a body each on the other process', async (t) => {
    const blob = randomBytes(700_001);
    const digest = sha256(blob);
    const post = await fetch(`${b.url}/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
    t.equal(post.status, 202);
    let location = post.headers.get('location') ?? '';
    const half = 350_000;
    for (const [node, start, end] of [
      [a, 0, half],
      [b, half, blob.length],
    ] as const) {
      const res = await fetch(new URL(location, node.url), {
        method: 'PATCH',
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${start}-${end - 1}` },
        body: blob.subarray(start, end),
      });
      t.equal(res.status, 202);
      location = res.headers.get('location') ?? location;
    }
    const put = await fetch(`${new URL(location, a.url).href}${location.includes('?') ? '&' : '?'}digest=${digest}`, { method: 'PUT' });
    t.equal(put.status, 201, 'PUT without body on A after the last PATCH on B');
    const got = await getBlob(b.url, digest);
    t.same(got, { status: 200, header: digest, sha: digest, size: blob.length });
  });

  await t.test('a monolithic upload via one process is served by the other', async (t) => {
    const blob = randomBytes(1_234_567);
    const digest = sha256(blob);
    const res = await fetch(`${a.url}/v2/${REPO}/blobs/uploads/?digest=${digest}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/octet-stream' },
      body: blob,
    });
    t.equal(res.status, 201, 'monolithic POST on A');
    const head = await fetch(`${b.url}/v2/${REPO}/blobs/${digest}`, { method: 'HEAD' });
    t.equal(head.status, 200, 'HEAD on B');
    t.equal(head.headers.get('content-length'), String(blob.length));
    t.same(await getBlob(b.url, digest), { status: 200, header: digest, sha: digest, size: blob.length }, 'GET on B');
  });

  await t.test('concurrent PATCHes of the same chunk on both processes: exactly one applies', async (t) => {
    for (let round = 0; round < 5; round++) {
      const blob = randomBytes(512 * 1024 + round);
      const digest = sha256(blob);
      const post = await fetch(`${(nodes[round % 2] as BerthProcess).url}/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
      t.equal(post.status, 202);
      const location = post.headers.get('location') ?? '';
      // Both requests send half of the chunk, then wait for each other, so their writes overlap in time.
      let open: () => void = () => undefined;
      const gate = new Promise<void>((resolve) => (open = resolve));
      const headers = { 'Content-Type': 'application/octet-stream', 'Content-Range': `0-${blob.length - 1}` };
      const reqs = nodes.map((node) => patchInParts(new URL(location, node.url).href, blob, headers, gate));
      await Promise.all(reqs.map((r) => r.started));
      await sleep(100);
      open();
      const results = await Promise.all(reqs.map((r) => r.done));
      const statuses = results.map((r) => r.status).sort();
      const winners = statuses.filter((s) => s === 202).length;
      t.equal(winners, 1, `round ${round}: exactly one PATCH applies (statuses ${statuses.join(', ')})`);
      const loser = results.find((r) => r.status !== 202);
      t.ok(loser && (loser.status === 416 || loser.status === 409), `round ${round}: the other gets 416 or 409 (got ${loser?.status})`);
      if (loser) {
        const code = (JSON.parse(loser.body) as { errors: { code: string }[] }).errors[0]?.code;
        t.ok(code === 'RANGE_INVALID' || code === 'BLOB_UPLOAD_INVALID', `round ${round}: error code ${code}`);
      }

      const status = await fetch(new URL(location, (nodes[(round + 1) % 2] as BerthProcess).url));
      t.equal(status.headers.get('range'), `0-${blob.length - 1}`, `round ${round}: the chunk counts once`);
      const put = await fetch(`${new URL(location, a.url).href}${location.includes('?') ? '&' : '?'}digest=${digest}`, { method: 'PUT' });
      t.equal(put.status, 201, `round ${round}: PUT completes`);
      for (const node of nodes) {
        t.same(await getBlob(node.url, digest), { status: 200, header: digest, sha: digest, size: blob.length }, `round ${round}: blob intact`);
      }
    }
  });

  await t.test('both processes exit 0 on SIGTERM', async (t) => {
    const [ra, rb] = await Promise.all([a.stop(), b.stop()]);
    t.same(ra, { code: 0, signal: null, killed: false }, 'A exits 0');
    t.same(rb, { code: 0, signal: null, killed: false }, 'B exits 0');
    const errors = [...a.logs, ...b.logs].filter((l) => /"level":(50|60)/.test(l));
    t.same(errors, [], 'no error-level log lines');
  });
});
