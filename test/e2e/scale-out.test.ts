import { Agent, createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { spawnBerth, type BerthProcess } from '../helpers/berth-process.js';
import { layoutTagDigest, makeImageLayout, walkBlobs, type GeneratedLayout } from '../helpers/oci-layout.js';
import { tempDir } from '../helpers/ports.js';
import { startRedis } from '../helpers/redis.js';
import { s3RegistryEnv, startS3Server } from '../helpers/s3-server.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';

/**
 * Issue 7: "Scale-out test: three berth processes on loopback sharing one S3 server and one Redis; a small
 * round-robin front … sends each request of each push to a different instance; 10 concurrent skopeo pushes and
 * pulls of different images, all digests verified."
 */

const MiB = 1024 * 1024;
const IMAGES = 10;

/** Starts `berth serve` named `name` with `env`, configured by environment only; resolves once `/readyz` answers 200. */
function startBerthProcess(t: Test, name: string, env: Record<string, string>): Promise<BerthProcess> {
  return spawnBerth(t, { ...env, REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED: 'false', REGISTRY_LOG_LEVEL: 'warn' }, { name });
}

/** The round-robin front: every request goes to the next instance; `served[i]` counts what instance i answered. */
interface Front {
  url: string;
  served: number[];
  /** Requests (method, path, instance) in arrival order. */
  log: Array<{ method: string; path: string; instance: number }>;
}

const UPLOAD_ID = /\/blobs\/uploads\/([0-9a-f-]{36})/;

/**
 * A tiny HTTP load balancer: forwards each request, headers and body unchanged and streamed both ways, to an
 * instance, and streams the answer back as is (berth's Location headers are relative, so nothing is rewritten).
 * Requests go round robin, except that a request of an upload goes to the instance after the one that took the
 * upload's previous request (learnt from the Location the POST answered), so the POST, PATCH and PUT of every blob
 * push each land on a different instance.
 */
async function startFront(t: Test, instances: BerthProcess[]): Promise<Front> {
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const served = instances.map(() => 0);
  const log: Front['log'] = [];
  const lastOfUpload = new Map<string, number>();
  let next = 0;
  const server: Server = createServer((req, res) => {
    const id = UPLOAD_ID.exec(req.url ?? '')?.[1];
    const previous = id === undefined ? undefined : lastOfUpload.get(id);
    let i: number;
    if (previous !== undefined) {
      i = (previous + 1) % instances.length;
    } else {
      i = next;
      next = (next + 1) % instances.length;
    }
    if (id !== undefined) lastOfUpload.set(id, i);
    const target = instances[i] as BerthProcess;
    served[i] = (served[i] ?? 0) + 1;
    log.push({ method: req.method ?? '', path: req.url ?? '', instance: i });
    const up = httpRequest({ host: '127.0.0.1', port: target.port, method: req.method, path: req.url, headers: req.headers, agent }, (upRes) => {
      const started = UPLOAD_ID.exec(String(upRes.headers.location ?? ''))?.[1];
      if (started !== undefined && !lastOfUpload.has(started)) lastOfUpload.set(started, i);
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    server.closeAllConnections();
    agent.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, served, log };
}

t.test('three berth processes on one S3 bucket and one Redis behind a round-robin front', async (t) => {
  const s3 = await startS3Server(t);
  const redis = await startRedis(t);
  const env = { ...s3RegistryEnv(s3), REGISTRY_REDIS_ADDR: redis.addr };
  const instances = await Promise.all(['A', 'B', 'C'].map((n) => startBerthProcess(t, n, env)));
  const front = await startFront(t, instances);

  const src = await tempDir(t, 'berth-scale-src-');
  const images: GeneratedLayout[] = [];
  for (let i = 0; i < IMAGES; i++) {
    images.push(await makeImageLayout(src, { layers: [MiB + i * 1000, MiB + 333 + i], tag: `img${i}` }));
  }
  const ref = (i: number) => dockerRef(front.url, `scale/app${i}`, 'v1');

  await t.test(`${IMAGES} concurrent skopeo pushes`, async (t) => {
    await Promise.all(
      images.map((_, i) => skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:img${i}`, ref(i)], { timeoutMs: 50_000 })),
    );
    for (const [i, image] of images.entries()) {
      const head = await fetch(`${front.url}/v2/scale/app${i}/manifests/v1`, { method: 'HEAD', headers: { Accept: image.mediaType } });
      t.equal(head.headers.get('docker-content-digest'), image.digest, `app${i}:v1 resolves to the pushed manifest`);
    }
    // Every upload's requests were spread: its PATCH and PUT went to two instances other than the one of the POST.
    const byUpload = new Map<string, Set<number>>();
    for (const r of front.log) {
      const id = UPLOAD_ID.exec(r.path)?.[1];
      if (id) byUpload.set(id, (byUpload.get(id) ?? new Set()).add(r.instance));
    }
    t.ok(byUpload.size >= IMAGES * 3, `${byUpload.size} blob uploads (two layers and a config per image)`);
    t.same(
      [...byUpload.values()].filter((s) => s.size < 2).map((s) => [...s]),
      [],
      'no upload had all its requests on one instance',
    );
    t.same(s3.uploads(), [], 'no multipart upload is left in progress');
    t.same(
      s3.keys().filter((k) => k.includes('.berth-tail-') || k.includes('/_uploads/')),
      [],
      'no upload data left in the bucket',
    );
  });

  await t.test(`${IMAGES} concurrent skopeo pulls, all digests verified`, async (t) => {
    const dsts = await Promise.all(images.map(() => tempDir(t, 'berth-scale-dst-')));
    await Promise.all(
      images.map((_, i) => skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', ref(i), `oci:${dsts[i]}:v1`], { timeoutMs: 50_000 })),
    );
    for (const [i, image] of images.entries()) {
      const dst = dsts[i] as string;
      t.equal(await layoutTagDigest(dst, 'v1'), image.digest, `app${i}: the pulled tag names the pushed manifest`);
      const pulled = await walkBlobs(dst, image.digest, image.mediaType);
      t.same(
        pulled.map((b) => b.digest),
        [...image.blobs].sort(),
        `app${i}: exactly the pushed blobs`,
      );
      t.same(
        pulled.filter((b) => b.actual !== b.digest),
        [],
        `app${i}: every pulled blob hashes to its digest`,
      );
    }
  });

  await t.test('every instance served requests; all exit 0 without error logs', async (t) => {
    for (const [i, n] of instances.entries()) t.ok((front.served[i] ?? 0) > 0, `${n.name} served ${front.served[i]} requests`);
    const results = (await Promise.all(instances.map((n) => n.stop()))).map(({ code, signal }) => ({ code, signal }));
    t.same(
      results,
      instances.map(() => ({ code: 0, signal: null })),
      'every instance exits 0 on SIGTERM',
    );
    t.same(
      instances.flatMap((n) => n.logs.filter((l) => /"level":(50|60)/.test(l))),
      [],
      'no error-level log lines',
    );
  });
});
