import { randomBytes } from 'node:crypto';
import t, { type Test } from 'tap';
import { spawnBerth, type BerthProcess } from '../helpers/berth-process.js';
import { startRedis } from '../helpers/redis.js';
import { s3RegistryEnv, startS3Server } from '../helpers/s3-server.js';
import { sha256 } from '../helpers/digest.js';

/**
 * Issue 3: "Two berth processes on the same bucket and one Redis complete an upload whose requests alternate between
 * them." Chunks are 3 MiB, below S3's 5 MiB minimum part, so the tail a PATCH leaves must survive in S3 (and its
 * whereabouts in Redis) until the next PATCH, on the other process, picks it up.
 */

const MiB = 1024 * 1024;
const REPO = 'shared/s3-blob';

/** Starts `berth serve` named `name` with `env`, configured by environment only; resolves once `/readyz` answers 200. */
function startBerthProcess(t: Test, name: string, env: Record<string, string>): Promise<BerthProcess> {
  return spawnBerth(t, { ...env, REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED: 'false', REGISTRY_LOG_LEVEL: 'warn' }, { name });
}

/** GETs a blob (following a 307 to S3) and returns the status and the sha256 of the bytes received. */
async function getBlob(url: string, digest: string): Promise<{ status: number; sha: string; size: number; redirected: boolean }> {
  const res = await fetch(`${url}/v2/${REPO}/blobs/${digest}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: res.status, sha: sha256(bytes), size: bytes.length, redirected: res.redirected };
}

function withDigest(location: string, base: string, digest: string): string {
  return `${new URL(location, base).href}${location.includes('?') ? '&' : '?'}digest=${digest}`;
}

t.test('two berth processes on one bucket and one Redis', async (t) => {
  const s3 = await startS3Server(t);
  const redis = await startRedis(t);
  const env = { ...s3RegistryEnv(s3), REGISTRY_REDIS_ADDR: redis.addr };
  const [a, b] = await Promise.all([startBerthProcess(t, 'A', env), startBerthProcess(t, 'B', env)]);
  const nodes = [a, b];
  const other = (n: BerthProcess) => (n === a ? b : a);
  const tails = () => s3.keys().filter((k) => k.includes('.berth-tail-'));

  await t.test('POST, 3 MiB PATCHes and PUT alternate between the processes', async (t) => {
    const blob = randomBytes(14 * MiB + 12345);
    const digest = sha256(blob);
    const post = await fetch(`${a.url}/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
    t.equal(post.status, 202, 'POST on A');
    let location = post.headers.get('location') ?? '';
    let node = a;
    const chunk = 3 * MiB;
    const lastStart = Math.floor((blob.length - 1) / chunk) * chunk;
    let tailSeen = 0;
    for (let start = 0; start < lastStart; start += chunk) {
      node = other(node);
      const end = start + chunk;
      const res = await fetch(new URL(location, node.url), {
        method: 'PATCH',
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${start}-${end - 1}` },
        body: blob.subarray(start, end),
      });
      t.equal(res.status, 202, `PATCH ${start}-${end - 1} on ${node.name}${res.status === 202 ? '' : `: ${await res.text()}`}`);
      t.equal(res.headers.get('range'), `0-${end - 1}`, `Range after the chunk at ${start}`);
      location = res.headers.get('location') ?? location;
      if (tails().length > 0) tailSeen += 1;
    }
    t.ok(tailSeen > 0, 'PATCHes ending below a part boundary left their tail in S3 for the other process');
    t.ok(
      s3.requests.some((r) => r.method === 'PUT' && r.query.partNumber !== undefined && r.status === 200),
      'and full parts went into a multipart upload',
    );

    node = other(node);
    const status = await fetch(new URL(location, node.url));
    t.equal(status.status, 204, `upload status on ${node.name}`);
    t.equal(status.headers.get('range'), `0-${lastStart - 1}`, `${node.name} sees the offset the other process wrote`);

    const put = await fetch(withDigest(location, node.url, digest), {
      method: 'PUT',
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${lastStart}-${blob.length - 1}` },
      body: blob.subarray(lastStart),
    });
    t.equal(put.status, 201, `PUT with the last chunk on ${node.name}${put.status === 201 ? '' : `: ${await put.text()}`}`);
    t.equal(put.headers.get('docker-content-digest'), digest);

    for (const n of nodes) {
      const head = await fetch(`${n.url}/v2/${REPO}/blobs/${digest}`, { method: 'HEAD' });
      t.equal(head.status, 200, `HEAD on ${n.name}`);
      t.equal(head.headers.get('content-length'), String(blob.length));
      const got = await getBlob(n.url, digest);
      t.same(got, { status: 200, sha: digest, size: blob.length, redirected: true }, `blob readable from ${n.name} (via its presigned redirect)`);
    }
    t.same(s3.uploads(), [], 'no multipart upload is left in progress');
    t.same(tails(), [], 'no tail side object is left');
    t.same(
      s3.keys().filter((k) => k.includes('/_uploads/')),
      [],
      'the upload directory is gone',
    );
  });

  await t.test('a PUT without body on one process after the last PATCH on the other', async (t) => {
    const blob = randomBytes(7 * MiB + 1);
    const digest = sha256(blob);
    const post = await fetch(`${b.url}/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
    t.equal(post.status, 202);
    let location = post.headers.get('location') ?? '';
    for (const [n, start, end] of [
      [a, 0, 4 * MiB],
      [b, 4 * MiB, blob.length],
    ] as const) {
      const res = await fetch(new URL(location, n.url), {
        method: 'PATCH',
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${start}-${end - 1}` },
        body: blob.subarray(start, end),
      });
      t.equal(res.status, 202, `PATCH on ${n.name}`);
      location = res.headers.get('location') ?? location;
    }
    const put = await fetch(withDigest(location, a.url, digest), { method: 'PUT' });
    t.equal(put.status, 201, `PUT without body on A${put.status === 201 ? '' : `: ${await put.text()}`}`);
    t.same(await getBlob(b.url, digest), { status: 200, sha: digest, size: blob.length, redirected: true });
  });

  await t.test('a wrong digest on the other process commits nothing', async (t) => {
    const blob = randomBytes(6 * MiB);
    const digest = sha256(blob);
    const wrong = sha256(Buffer.from('not the blob'));
    const post = await fetch(`${a.url}/v2/${REPO}/blobs/uploads/`, { method: 'POST' });
    const location = post.headers.get('location') ?? '';
    const patch = await fetch(new URL(location, a.url), { method: 'PATCH', headers: { 'Content-Type': 'application/octet-stream' }, body: blob });
    t.equal(patch.status, 202);
    const put = await fetch(withDigest(patch.headers.get('location') ?? location, b.url, wrong), { method: 'PUT' });
    t.equal(put.status, 400, 'PUT with a digest that does not match answers 400');
    t.match(await put.json(), { errors: [{ code: 'DIGEST_INVALID' }] });
    for (const d of [digest, wrong]) {
      const head = await fetch(`${a.url}/v2/${REPO}/blobs/${d}`, { method: 'HEAD' });
      t.equal(head.status, 404, `no blob ${d.slice(0, 19)}…`);
      const hex = d.slice(7);
      t.notOk(s3.keys().includes(`docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`), 'nothing at its key in the bucket');
    }
    t.same(s3.uploads(), [], 'the multipart upload was aborted');
    t.same(
      s3.keys().filter((k) => k.includes('/_uploads/') || k.includes('.berth-tail-')),
      [],
      'and the upload data removed',
    );
  });

  await t.test('both processes exit 0 on SIGTERM without error logs', async (t) => {
    const results = (await Promise.all(nodes.map((n) => n.stop()))).map(({ code, signal }) => ({ code, signal }));
    t.same(results, [
      { code: 0, signal: null },
      { code: 0, signal: null },
    ]);
    t.same(
      [...a.logs, ...b.logs].filter((l) => /"level":(50|60)/.test(l)),
      [],
      'no error-level log lines',
    );
  });
});
