import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { startBerth } from '../helpers/berth.js';
import { startDockerRegistry } from '../helpers/docker-registry.js';
import { startEventReceiver, type EventReceiver } from '../helpers/event-receiver.js';
import { makeImageLayout } from '../helpers/oci-layout.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';

/*
 * berth's events against Debian's docker-registry (Distribution 2.8) for the same operations, field by field: the
 * same pushes (skopeo and plain HTTP, monolithic and chunked), pulls (skopeo, GET and HEAD of manifests and blobs),
 * a cross-repository mount and deletes, with the same notifications config. Only what differs per run or per
 * server is normalised: ids, timestamps, ports and the instance.
 */

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

interface Content {
  layer: Buffer;
  config: Buffer;
  manifest: Buffer;
  layoutDir: string;
}

async function makeContent(t: Test): Promise<Content> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-events-cmp-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const layoutDir = join(dir, 'layout');
  await makeImageLayout(layoutDir, { layers: [3000, 5000], tag: 'v1' });
  const layer = randomBytes(1000);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }],
    }),
  );
  return { layer, config, manifest, layoutDir };
}

async function ok(res: Response, status: number, what: string): Promise<Response> {
  await res.arrayBuffer();
  if (res.status !== status) throw new Error(`${what}: ${res.status}, expected ${status}`);
  return res;
}

/** The operations, in order, each finished before the next starts. */
async function scenario(url: string, c: Content, pullDir: string): Promise<void> {
  await skopeo(['copy', '--preserve-digests', `oci:${c.layoutDir}:v1`, dockerRef(url, 'sk/img', 'v1'), '--dest-tls-verify=false']);
  await skopeo(['copy', dockerRef(url, 'sk/img', 'v1'), `oci:${pullDir}:v1`, '--src-tls-verify=false']);
  // Monolithic upload (POST, then PUT with the bytes), chunked upload (POST, PATCH, PUT).
  let r = await ok(await fetch(`${url}/v2/a/b/blobs/uploads/`, { method: 'POST' }), 202, 'start');
  const put = new URL(r.headers.get('location') ?? '', url);
  put.searchParams.set('digest', sha(c.layer));
  await ok(await fetch(put, { method: 'PUT', body: c.layer, headers: { 'content-type': 'application/octet-stream' } }), 201, 'put');
  r = await ok(await fetch(`${url}/v2/a/b/blobs/uploads/`, { method: 'POST' }), 202, 'start');
  r = await ok(
    await fetch(new URL(r.headers.get('location') ?? '', url), {
      method: 'PATCH',
      body: c.config,
      headers: { 'content-type': 'application/octet-stream' },
    }),
    202,
    'patch',
  );
  const loc = new URL(r.headers.get('location') ?? '', url);
  loc.searchParams.set('digest', sha(c.config));
  await ok(await fetch(loc, { method: 'PUT' }), 201, 'close');
  const md = sha(c.manifest);
  await ok(
    await fetch(`${url}/v2/a/b/manifests/v1`, { method: 'PUT', body: c.manifest, headers: { 'content-type': OCI_MANIFEST } }),
    201,
    'manifest by tag',
  );
  await ok(
    await fetch(`${url}/v2/a/b/manifests/${md}`, { method: 'PUT', body: c.manifest, headers: { 'content-type': OCI_MANIFEST } }),
    201,
    'manifest by digest',
  );
  await ok(await fetch(`${url}/v2/a/b/manifests/v1`, { headers: { accept: OCI_MANIFEST, 'user-agent': 'events-test/1.0' } }), 200, 'get by tag');
  await ok(await fetch(`${url}/v2/a/b/manifests/${md}`, { method: 'HEAD', headers: { accept: OCI_MANIFEST } }), 200, 'head by digest');
  await ok(await fetch(`${url}/v2/a/b/blobs/${sha(c.layer)}`), 200, 'get blob');
  await ok(await fetch(`${url}/v2/a/b/blobs/${sha(c.layer)}`, { method: 'HEAD' }), 200, 'head blob');
  await ok(await fetch(`${url}/v2/c/d/blobs/uploads/?mount=${sha(c.layer)}&from=a/b`, { method: 'POST' }), 201, 'mount');
  await ok(await fetch(`${url}/v2/a/b/manifests/${md}`, { method: 'DELETE' }), 202, 'delete manifest');
  await ok(await fetch(`${url}/v2/c/d/blobs/${sha(c.layer)}`, { method: 'DELETE' }), 202, 'delete blob');
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** One event with what varies per run replaced by placeholders (after checking its shape); key order is kept. */
function normalise(t: Test, e: Record<string, unknown>, port: number): string {
  t.match(e.id, UUID, 'id is a UUID');
  t.match(e.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/, 'RFC 3339 timestamp');
  const request = e.request as Record<string, string>;
  if (request.addr !== undefined) t.match(request.addr, /^127\.0\.0\.1:\d+$/, 'request.addr is ip:port');
  const source = e.source as Record<string, string>;
  t.match(source.addr, /^[^:]+:\d+$/, 'source.addr is host:port');
  t.match(source.instanceID, UUID);
  const text = JSON.stringify({
    ...e,
    id: '<id>',
    timestamp: '<time>',
    request: { ...request, ...(request.id ? { id: '<request>' } : {}), ...(request.addr ? { addr: '<addr>' } : {}) },
    source: { addr: '<source>', instanceID: '<instance>' },
  });
  return text.split(`127.0.0.1:${port}`).join('<host>');
}

async function settle(rx: EventReceiver, atLeast: number): Promise<Record<string, unknown>[]> {
  await rx.waitFor((e) => e.length >= atLeast, 30_000);
  // Anything extra would arrive right behind.
  let n = rx.events().length;
  for (;;) {
    await new Promise((r) => setTimeout(r, 700));
    if (rx.events().length === n) return rx.events();
    n = rx.events().length;
  }
}

t.test('berth sends the events registry:2 sends, field by field', async (t) => {
  const content = await makeContent(t);
  const notifications = (url: string) => ({
    events: { includereferences: true },
    endpoints: [{ name: 'cmp', url, headers: { 'X-Secret': ['s'] }, timeout: '2s', threshold: 3, backoff: '200ms' }],
  });

  const rx2 = await startEventReceiver(t);
  const root2 = await mkdtemp(join(tmpdir(), 'berth-events-r2-'));
  t.teardown(() => rm(root2, { recursive: true, force: true }));
  const reg = await startDockerRegistry(t, { rootDirectory: root2, extraConfig: { notifications: notifications(rx2.url) } });
  await scenario(reg.url, content, join(root2, '..', `${root2.split('/').pop() ?? 'x'}-pull`));
  const theirs = await settle(rx2, 10);
  await reg.stop();

  const rxb = await startEventReceiver(t);
  const berth = await startBerth(t, { notifications: notifications(rxb.url) });
  const pullDir = await mkdtemp(join(tmpdir(), 'berth-events-pull-'));
  t.teardown(() => rm(pullDir, { recursive: true, force: true }));
  await scenario(berth.url, content, join(pullDir, 'p'));
  const ours = await settle(rxb, theirs.length);

  t.equal(rxb.requests[0]?.headers['content-type'], rx2.requests[0]?.headers['content-type'], 'same Content-Type');
  t.equal(rxb.requests[0]?.headers['x-secret'], 's', 'configured headers sent');
  t.match(rxb.requests[0]?.body, /^\{\n {3}"events": \[\n/, 'same indentation');
  t.same(
    rxb.requests.map((r) => (JSON.parse(r.body) as { events: unknown[] }).events.length),
    rx2.requests.map(() => 1),
    'one event per request, as registry:2',
  );
  const norm = (events: Record<string, unknown>[], port: number) => events.map((e) => normalise(t, e, port)).sort();
  const regPort = Number(new URL(reg.url).port);
  const berthPort = Number(new URL(berth.url).port);
  t.same(norm(ours, berthPort), norm(theirs, regPort), 'the same events, with the same fields in the same order');
  t.equal(ours.length, theirs.length);
  // Per-operation order: what one client did in sequence arrives in that sequence.
  const seq = (events: Record<string, unknown>[]) =>
    events
      .filter((e) => (e.target as { repository: string }).repository !== 'sk/img')
      .map((e) => `${String(e.action)} ${JSON.stringify(e.target).length}`);
  t.same(seq(ours), seq(theirs), 'in the same order');
});
