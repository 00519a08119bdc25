import { existsSync } from 'node:fs';
import { readFile, utimes } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { userAdd } from '../../src/auth/htpasswd.js';
import { startBerth } from '../helpers/berth.js';
import { startDockerRegistry } from '../helpers/docker-registry.js';
import { makeImageLayout } from '../helpers/oci-layout.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';
import { accessLog, accessSince, startGateProxy } from './helpers.js';
import { sha256 } from '../helpers/digest.js';

/**
 * Upstream behaviour of the pull-through cache against docker-registry with HTTP Basic auth (htpasswd): the Basic
 * challenge, HEAD-only answers for uncached blobs, and stale-if-error for 5xx, 429, timeouts, with the outage and
 * the recovery each logged once. Distribution's single-upstream `proxy.remoteurl` form configures it.
 */
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

t.test('stale-if-error and Basic auth upstream', async (t) => {
  const dir = await tempDir(t, 'berth-proxy-basic-');
  const htpasswd = join(dir, 'htpasswd');
  await userAdd(htpasswd, 'mirror', 'mirror-pw');
  const upstream = await startDockerRegistry(t, {
    rootDirectory: await tempDir(t, 'berth-proxy-basic-data-'),
    extraConfig: { auth: { htpasswd: { realm: 'basic-realm', path: htpasswd } } },
  });
  const src = await tempDir(t, 'berth-proxy-basic-src-');
  const image = await makeImageLayout(src, { layers: [40_000], tag: 'v1' });
  const other = await makeImageLayout(src, { layers: [1000], tag: 'v2' });
  /** Pushes the layout in `dir` (its tag v1 or v2) to the upstream as `team/app:<as>`, with the mirror's credentials. */
  const seed = (dir: string, tag: string, as = tag) =>
    skopeo([
      'copy',
      '--preserve-digests',
      '--dest-tls-verify=false',
      '--dest-creds',
      'mirror:mirror-pw',
      `oci:${dir}:${tag}`,
      dockerRef(upstream.url, 'team/app', as),
    ]);
  for (const tag of ['v1', 'v2']) await seed(src, tag);
  const gate = await startGateProxy(t, upstream.url);
  const lines: string[] = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    }),
  );
  const berth = await startBerth(
    t,
    { proxy: { remoteurl: gate.url, username: 'mirror', password: 'mirror-pw', ttl: '24h', tagttl: '1h', timeout: '1s' } },
    { logger },
  );
  const get = (path: string, method = 'GET') => fetch(`${berth.url}/v2/${path}`, { method, headers: { accept: ACCEPT } });
  const ageTag = async (tag: string) => {
    const old = new Date(Date.now() - 2 * 3_600_000);
    await utimes(join(berth.root, 'docker/registry/v2/repositories/team/app/_manifests/tags', tag, 'current/link'), old, old);
  };
  const outages = () => lines.filter((l) => l.includes('upstream unavailable')).length;
  const recoveries = () => lines.filter((l) => l.includes('upstream is reachable again')).length;

  await t.test('a Basic challenge is answered with the configured credentials', async (t) => {
    const mark = accessLog(upstream).length;
    const res = await get('team/app/manifests/v1');
    t.equal(res.status, 200);
    t.equal(res.headers.get('docker-content-digest'), image.digest);
    t.equal(sha256(Buffer.from(await res.arrayBuffer())), image.digest);
    const seen = accessSince(upstream, mark);
    t.same(
      seen.map((e) => e.status),
      [401, 200],
      'challenged once, then accepted',
    );
  });

  await t.test('HEAD of an uncached blob asks the upstream with a HEAD only', async (t) => {
    const layer = image.images[0]?.layers[0] as string;
    const mark = accessLog(upstream).length;
    const res = await fetch(`${berth.url}/v2/team/app/blobs/${layer}`, { method: 'HEAD' });
    t.equal(res.status, 200);
    t.equal(res.headers.get('content-length'), '40000');
    t.equal(res.headers.get('docker-content-digest'), layer);
    t.same(
      accessSince(upstream, mark).map((e) => e.method),
      ['HEAD'],
      'nothing downloaded',
    );
  });

  await t.test('a blob the upstream redirects to another origin is fetched there, without the upstream credentials', async (t) => {
    // A fresh layer, pushed to the upstream, that berth has never asked for.
    const cdnSrc = await tempDir(t, 'berth-proxy-cdn-src-');
    const cdnImage = await makeImageLayout(cdnSrc, { layers: [300_000], tag: 'v1' });
    await seed(cdnSrc, 'v1', 'cdn');
    const layer = cdnImage.images[0]?.layers[0] as string;
    const bytes = await readFile(join(cdnSrc, 'blobs/sha256', layer.slice('sha256:'.length)));
    const seenByCdn: Array<{ url: string; authorization: string | undefined }> = [];
    const cdn = createServer((req, res) => {
      seenByCdn.push({ url: req.url ?? '', authorization: req.headers.authorization });
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) });
      res.end(bytes);
    });
    await new Promise<void>((resolve) => cdn.listen(0, '127.0.0.1', resolve));
    t.teardown(() => new Promise<void>((resolve) => cdn.close(() => resolve())));
    const cdnPath = `/cdn/${layer.slice('sha256:'.length)}?expires=1`;
    gate.redirect((m, p) => m === 'GET' && p.endsWith(`/blobs/${layer}`), `http://127.0.0.1:${(cdn.address() as AddressInfo).port}${cdnPath}`);
    const mark = gate.requests.length;

    const res = await fetch(`${berth.url}/v2/team/app/blobs/${layer}`);
    t.equal(res.status, 200);
    t.equal(sha256(Buffer.from(await res.arrayBuffer())), layer, 'the bytes the other origin served');
    t.same(
      seenByCdn.map((r) => r.url),
      [cdnPath],
      'fetched once from the Location',
    );
    t.equal(seenByCdn[0]?.authorization, undefined, 'the upstream credentials did not go to the other origin');
    const asked = gate.requests.slice(mark).filter((r) => r.path.endsWith(`/blobs/${layer}`));
    t.ok(asked.length > 0 && asked.every((r) => r.authorization?.startsWith('Basic ')), 'the upstream itself was asked with them');
    const again = await fetch(`${berth.url}/v2/team/app/blobs/${layer}`);
    t.equal(sha256(Buffer.from(await again.arrayBuffer())), layer);
    t.equal(seenByCdn.length, 1, 'cached: the next pull is served from storage');
  });

  await t.test('content that does not match its digest is never served whole nor cached', async (t) => {
    const layer = image.images[0]?.config as string;
    gate.corrupt((m, p) => m === 'GET' && p.endsWith(`/blobs/${layer}`));
    const res = await fetch(`${berth.url}/v2/team/app/blobs/${layer}`);
    // A small blob: its bytes become readable only with the verified last one, so the client gets the error itself.
    t.equal(res.status, 503, 'the client gets an error, not the corrupt blob');
    t.match(await res.json(), { errors: [{ code: 'UNAVAILABLE' }] }, 'UNAVAILABLE');
    const blobFile = join(berth.root, 'docker/registry/v2/blobs/sha256', layer.slice(7, 9), layer.slice(7), 'data');
    t.notOk(existsSync(blobFile), 'nothing stored');
    t.ok(
      lines.some((l) => l.includes('blob fill failed') && l.includes('upstream sent content with digest')),
      'the mismatch is logged',
    );
    const retry = await fetch(`${berth.url}/v2/team/app/blobs/${layer}`);
    t.equal(sha256(Buffer.from(await retry.arrayBuffer())), layer, 'the next pull gets the right bytes');
  });

  await t.test('5xx on revalidation: the cached tag is served, the outage logged once', async (t) => {
    await ageTag('v1');
    gate.fail((m) => m === 'HEAD', 503, 1);
    const res = await get('team/app/manifests/v1');
    t.equal(res.status, 200, 'stale-if-error');
    t.equal(res.headers.get('docker-content-digest'), image.digest);
    await res.arrayBuffer();
    t.equal(outages(), 1, 'logged');
    const before = gate.requests.length;
    const again = await get('team/app/manifests/v1');
    t.equal(again.status, 200);
    await again.arrayBuffer();
    t.equal(gate.requests.length, before, 'while offline, cached tags are served without waiting for the upstream');
    t.equal(outages(), 1, 'not logged again');
  });

  await t.test('an uncached request still tries the upstream, and its success ends the outage', async (t) => {
    const res = await get('team/app/manifests/v2');
    t.equal(res.status, 200);
    t.equal(res.headers.get('docker-content-digest'), other.digest);
    await res.arrayBuffer();
    t.equal(recoveries(), 1, 'the recovery is logged once');
  });

  await t.test('429 for uncached content is passed on as TOOMANYREQUESTS', async (t) => {
    gate.fail((m, p) => m === 'GET' && p.includes('/manifests/'), 429, 1);
    const res = await get('team/app/manifests/nope');
    t.equal(res.status, 429);
    t.equal(res.headers.get('retry-after'), '7');
    t.match(await res.json(), { errors: [{ code: 'TOOMANYREQUESTS' }] });
  });

  await t.test('a stalled upstream times out and the cached tag is served', async (t) => {
    // Recover first (an uncached request succeeds), so the tag check is attempted again.
    const warm = await get(`team/app/manifests/${other.digest}`);
    await warm.arrayBuffer();
    const layer = other.images[0]?.layers[0] as string;
    const blob = await fetch(`${berth.url}/v2/team/app/blobs/${layer}`);
    t.equal(blob.status, 200);
    await blob.arrayBuffer();
    await ageTag('v2');
    gate.stall((m) => m === 'HEAD');
    const res = await get('team/app/manifests/v2');
    t.equal(res.status, 200, 'served after the 1s timeout');
    t.equal(res.headers.get('docker-content-digest'), other.digest);
    await res.arrayBuffer();
    gate.release();
    t.ok(
      lines.some((l) => l.includes('timed out')),
      'the timeout is the logged reason',
    );
  });

  await t.test('uncached content while the upstream is unreachable: 503 UNAVAILABLE', async (t) => {
    await upstream.stop();
    const res = await get('team/app/manifests/v3');
    t.equal(res.status, 503);
    t.match(await res.json(), { errors: [{ code: 'UNAVAILABLE', message: /not cached/ }] });
    const blob = await fetch(`${berth.url}/v2/team/app/blobs/sha256:${'1'.repeat(64)}`);
    t.equal(blob.status, 503);
    await blob.arrayBuffer();
    const layer = image.images[0]?.layers[0] as string;
    const cachedHead = await fetch(`${berth.url}/v2/team/app/blobs/${layer}`, { method: 'HEAD' });
    t.equal(cachedHead.status, 503, 'a blob only ever HEADed was never cached');
  });
});
