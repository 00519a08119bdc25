import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { createPullThrough } from '../../src/proxy/index.js';
import { startBerth } from '../helpers/berth.js';
import { startDockerRegistry } from '../helpers/docker-registry.js';
import { layoutTagDigest, makeImageLayout, walkBlobs } from '../helpers/oci-layout.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';
import { accessLog, accessSince, eventually, MIRROR, startGateProxy, startTokenHub } from './helpers.js';
import { sha256 } from '../helpers/digest.js';

/**
 * Issue 5 end to end: berth as a pull-through cache in front of a "Docker Hub" (Debian's docker-registry, Distribution
 * 2.8, demanding the Docker token dance against a berth token server) and a second, anonymous upstream ("ghcr.io").
 * The hub's own access log is the witness for what berth asked upstream.
 */
const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

const MiB = 1024 * 1024;

t.test('pull-through cache against a token-protected upstream', async (t) => {
  const hub = await startTokenHub(t);
  const ghcrRoot = await tempDir(t, 'berth-proxy-ghcr-');
  const ghcr = await startDockerRegistry(t, { rootDirectory: ghcrRoot });
  const gate = await startGateProxy(t, hub.registry.url);

  const src = await tempDir(t, 'berth-proxy-src-');
  const alpine = await makeImageLayout(src, { layers: [3000, 50_000], tag: 'alpine', gzip: true });
  const multi = await makeImageLayout(src, {
    layers: [20_000],
    tag: 'multi',
    platforms: [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
    ],
  });
  const big = await makeImageLayout(src, { layers: [64 * MiB], tag: 'big' });
  const app = await makeImageLayout(src, { layers: [300_000], tag: 'app' });
  const secret = await makeImageLayout(src, { layers: [1000], tag: 'secret' });
  const tool = await makeImageLayout(src, { layers: [7000], tag: 'tool' });
  const mine = await makeImageLayout(src, { layers: [4000], tag: 'mine' });
  await hub.seed(src, 'alpine', 'library/alpine', '3');
  await hub.seed(src, 'multi', 'library/multi', '1');
  await hub.seed(src, 'big', 'library/big', '1');
  await hub.seed(src, 'app', 'org/app', 'v1');
  await hub.seed(src, 'secret', 'private/secret', '1');
  await hub.seed(src, 'tool', 'library/conc', '1');
  await skopeo(['copy', '--all', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:tool`, dockerRef(ghcr.url, 'org/tool', 'v1')]);

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
  const proxyConfig = {
    upstreams: [
      {
        name: 'docker.io',
        url: gate.url,
        username: MIRROR.user,
        password: MIRROR.password,
        repositories: ['library/**', 'org/**', 'private/**'],
        tagttl: '1h',
        ttl: '24h',
        timeout: '5s',
      },
      { name: 'ghcr.io', url: ghcr.url, tagttl: '1h', timeout: '5s' },
    ],
  };
  const berth = await startBerth(t, { proxy: proxyConfig }, { logger });
  const v2 = (path: string) => `${berth.url}/v2/${path}`;
  const getManifest = (path: string, method = 'GET') => fetch(v2(path), { method, headers: { accept: ACCEPT } });
  const tagLink = (repo: string, tag: string) => join(berth.root, 'docker/registry/v2/repositories', repo, '_manifests/tags', tag, 'current/link');
  const age = async (path: string) => {
    const old = new Date(Date.now() - 2 * 3_600_000);
    await utimes(path, old, old);
  };

  await t.test('Docker daemon mirror shape: library/ names, no ns, token dance upstream', async (t) => {
    const mark = accessLog(hub.registry).length;
    const res = await getManifest('library/alpine/manifests/3');
    t.equal(res.status, 200);
    const body = Buffer.from(await res.arrayBuffer());
    t.equal(res.headers.get('docker-content-digest'), alpine.digest, 'the upstream digest');
    t.equal(sha256(body), alpine.digest, 'the upstream bytes');
    t.equal(res.headers.get('content-type'), 'application/vnd.oci.image.manifest.v1+json');
    t.equal(res.headers.get('oci-namespace'), null, 'no namespace echoed without ns');
    const seen = accessSince(hub.registry, mark);
    t.ok(
      seen.some((e) => e.status === 401),
      'the upstream demanded a token',
    );
    t.ok(
      seen.some((e) => e.method === 'GET' && e.path === '/v2/library/alpine/manifests/3' && e.status === 200),
      'and answered once berth had one',
    );
    for (const layer of alpine.images[0]?.layers ?? []) {
      const b = await fetch(v2(`library/alpine/blobs/${layer}`));
      t.equal(b.status, 200);
      t.equal(sha256(Buffer.from(await b.arrayBuffer())), layer, 'layer bytes verified');
    }
    const short = await getManifest('alpine/manifests/3');
    t.equal(short.headers.get('docker-content-digest'), alpine.digest, 'a one-component name is library/ on Docker Hub');
    await short.arrayBuffer();
    const tags = await fetch(v2('library/alpine/tags/list'));
    t.same(await tags.json(), { name: 'library/alpine', tags: ['3'] }, 'the tag list comes from the upstream');
    const ghTags = await fetch(v2('org/tool/tags/list?ns=ghcr.io'));
    t.same(await ghTags.json(), { name: 'org/tool', tags: ['v1'] }, 'from the upstream ns selects');
    const missing = await getManifest('library/alpine/manifests/nope');
    t.equal(missing.status, 404);
    t.match(await missing.json(), { errors: [{ code: 'MANIFEST_UNKNOWN' }] }, 'a tag the upstream lacks is MANIFEST_UNKNOWN');
  });

  await t.test('containerd mirror shape: ?ns= selects the upstream and is echoed', async (t) => {
    const res = await getManifest('library/alpine/manifests/3?ns=docker.io');
    t.equal(res.status, 200);
    t.equal(res.headers.get('oci-namespace'), 'docker.io');
    t.equal(res.headers.get('docker-content-digest'), alpine.digest);
    await res.arrayBuffer();

    const gh = await getManifest('org/tool/manifests/v1?ns=ghcr.io');
    t.equal(gh.status, 200, 'the second upstream by ns');
    t.equal(gh.headers.get('oci-namespace'), 'ghcr.io');
    t.equal(gh.headers.get('docker-content-digest'), tool.digest);
    await gh.arrayBuffer();
    const layer = tool.images[0]?.layers[0] as string;
    const blob = await fetch(v2(`org/tool/blobs/${layer}?ns=ghcr.io`));
    t.equal(blob.status, 200);
    t.equal(sha256(Buffer.from(await blob.arrayBuffer())), layer);

    const prefixed = await getManifest('ghcr.io/org/tool/manifests/v1');
    t.equal(prefixed.status, 200, 'the same cache under the upstream prefix');
    t.equal(prefixed.headers.get('docker-content-digest'), tool.digest);
    await prefixed.arrayBuffer();

    const sameNameHub = await getManifest('org/app/manifests/v1?ns=docker.io');
    t.equal(sameNameHub.headers.get('docker-content-digest'), app.digest, 'org/* from docker.io is a different image than from ghcr.io');
    await sameNameHub.arrayBuffer();

    // Referrers of a mirrored repository are the same answer as a local one's (written once, in http/): the spec's
    // Content-Type exactly, without fastify's "; charset=utf-8".
    const referrers = await fetch(v2(`library/alpine/referrers/${alpine.digest}?ns=docker.io`));
    t.equal(referrers.status, 200);
    t.equal(referrers.headers.get('content-type'), 'application/vnd.oci.image.index.v1+json', 'the index media type, no charset');
    t.equal(referrers.headers.get('oci-namespace'), 'docker.io');
    t.same(await referrers.json(), { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] });

    const unknownNs = await getManifest('library/alpine/manifests/3?ns=quay.io');
    t.equal(unknownNs.status, 404, 'an ns no upstream serves is not fetched from the default upstream');
    await unknownNs.arrayBuffer();
  });

  await t.test('skopeo pulls an index through berth with identical digests', async (t) => {
    const dst = await tempDir(t, 'berth-proxy-dst-');
    await skopeo(['copy', '--all', '--preserve-digests', '--src-tls-verify=false', dockerRef(berth.url, 'library/multi', '1'), `oci:${dst}:multi`]);
    t.equal(await layoutTagDigest(dst, 'multi'), multi.digest, 'the index digest');
    const walked = await walkBlobs(dst, multi.digest, 'application/vnd.oci.image.index.v1+json');
    t.equal(walked.length, multi.blobs.length, 'every blob of both platforms');
    t.ok(
      walked.every((b) => b.actual === b.digest),
      'every blob intact',
    );
    t.same(walked.map((b) => b.digest).sort(), [...multi.blobs].sort());
  });

  await t.test('a cached digest pull causes no upstream traffic', async (t) => {
    const mark = accessLog(hub.registry).length;
    const res = await getManifest(`library/multi/manifests/${multi.digest}`);
    t.equal(res.status, 200);
    await res.arrayBuffer();
    for (const image of multi.images) {
      const m = await getManifest(`library/multi/manifests/${image.manifest}`);
      t.equal(m.status, 200);
      await m.arrayBuffer();
      for (const d of [image.config, ...image.layers]) {
        const b = await fetch(v2(`library/multi/blobs/${d}`));
        t.equal(b.status, 200);
        await b.arrayBuffer();
      }
    }
    const fresh = await getManifest('library/multi/manifests/1');
    t.equal(fresh.status, 200, 'a tag within its ttl');
    await fresh.arrayBuffer();
    t.same(accessSince(hub.registry, mark), [], 'the upstream saw nothing');
  });

  await t.test('concurrent requests for an uncached manifest: one upstream GET', async (t) => {
    const mark = accessLog(hub.registry).length;
    const all = await Promise.all(
      Array.from({ length: 10 }, async () => {
        const res = await getManifest('library/conc/manifests/1');
        return { status: res.status, digest: sha256(Buffer.from(await res.arrayBuffer())) };
      }),
    );
    t.ok(
      all.every((r) => r.status === 200 && r.digest === tool.digest),
      'all ten got the manifest',
    );
    const gets = accessSince(hub.registry, mark).filter((e) => e.method === 'GET' && e.path === '/v2/library/conc/manifests/1');
    t.equal(gets.length, 1, 'one upstream GET');
  });

  await t.test('20 concurrent cold pulls of a 64 MiB layer: one upstream GET, bytes as they arrive', async (t) => {
    const layer = big.images[0]?.layers[0] as string;
    const path = `/v2/library/big/blobs/${layer}`;
    const mark = accessLog(hub.registry).length;
    // The upstream sends 8 MiB, then waits: every client must have bytes before the download is over.
    gate.hold((m, p) => m === 'GET' && p === path, 8 * MiB);
    const received = Array.from({ length: 20 }, () => 0);
    const quitter = new AbortController();
    const pulls = received.map(async (_, i) => {
      const res = await fetch(v2(`library/big/blobs/${layer}`), i === 0 ? { signal: quitter.signal } : {});
      t.equal(res.status, 200);
      const hash = createHash('sha256');
      try {
        for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
          hash.update(chunk);
          received[i] = (received[i] ?? 0) + chunk.byteLength;
        }
      } catch (err) {
        if (i === 0) return 'aborted';
        throw err;
      }
      return `sha256:${hash.digest('hex')}`;
    });
    const allStarted = await eventually(() => received.every((n) => n >= 4 * MiB));
    t.ok(allStarted, 'all 20 clients got bytes while the upstream transfer was still held');
    t.ok(gate.forwarded() < 64 * MiB, 'the upstream had not sent the whole layer');
    quitter.abort();
    gate.release();
    const results = await Promise.all(pulls);
    t.equal(results[0], 'aborted', 'one client left mid-transfer');
    t.ok(
      results.slice(1).every((d) => d === layer),
      '19 clients received the verified layer',
    );
    const gets = accessSince(hub.registry, mark).filter((e) => e.method === 'GET' && e.path === path);
    t.equal(gets.length, 1, 'exactly one upstream GET for the blob');
    t.equal(gate.requests.filter((r) => r.method === 'GET' && r.path === path).length, 1, 'also seen by the proxy in between');
    t.ok(
      await eventually(() => existsSync(join(berth.root, 'docker/registry/v2/blobs/sha256', layer.slice(7, 9), layer.slice(7), 'data'))),
      'committed to storage',
    );
    const again = await fetch(v2(`library/big/blobs/${layer}`), { headers: { range: 'bytes=10-19' } });
    t.equal(again.status, 206, 'served from storage afterwards, ranges too');
    t.equal((await again.arrayBuffer()).byteLength, 10);
  });

  await t.test('a truncated upstream transfer commits nothing', async (t) => {
    const layer = app.images[0]?.layers[0] as string;
    const path = `/v2/org/app/blobs/${layer}`;
    gate.cut((m, p) => m === 'GET' && p === path, 100_000);
    const res = await fetch(v2(`org/app/blobs/${layer}`));
    // The cut comes before the first MiB the fill writes to storage (what clients read): nothing was sent yet, so the
    // client gets the error as such (a transfer failing after bytes were sent is cut short instead: fleet-fill.test).
    t.equal(res.status, 503, 'the client gets an error, not a complete blob');
    t.match(await res.json(), { errors: [{ code: 'UNAVAILABLE' }] }, 'UNAVAILABLE');
    const blobFile = join(berth.root, 'docker/registry/v2/blobs/sha256', layer.slice(7, 9), layer.slice(7), 'data');
    t.ok(
      await eventually(async () => {
        const uploads = await readdir(join(berth.root, 'docker/registry/v2/repositories/org/app/_uploads')).catch(() => []);
        return uploads.length === 0;
      }),
      'no temp files left',
    );
    t.notOk(existsSync(blobFile), 'no blob stored');
    const retry = await fetch(v2(`org/app/blobs/${layer}`));
    t.equal(retry.status, 200);
    t.equal(sha256(Buffer.from(await retry.arrayBuffer())), layer, 'the next pull fetches it properly');
    t.ok(await eventually(() => existsSync(blobFile)), 'and caches it');
  });

  await t.test('after the tag ttl: HEAD revalidation, GET only for a changed digest', async (t) => {
    await age(tagLink('library/alpine', '3'));
    let mark = accessLog(hub.registry).length;
    const same = await getManifest('library/alpine/manifests/3');
    t.equal(same.headers.get('docker-content-digest'), alpine.digest);
    await same.arrayBuffer();
    let seen = accessSince(hub.registry, mark).filter((e) => e.status !== 401);
    t.same(
      seen.map((e) => `${e.method} ${e.path}`),
      ['HEAD /v2/library/alpine/manifests/3'],
      'only a HEAD went upstream',
    );

    const again = await getManifest('library/alpine/manifests/3');
    await again.arrayBuffer();
    t.equal(accessSince(hub.registry, mark).filter((e) => e.status !== 401).length, 1, 'the check renewed the tag ttl');

    const src2 = await tempDir(t, 'berth-proxy-src2-');
    const alpine2 = await makeImageLayout(src2, { layers: [2000], tag: 'alpine' });
    await hub.seed(src2, 'alpine', 'library/alpine', '3');
    await age(tagLink('library/alpine', '3'));
    mark = accessLog(hub.registry).length;
    const changed = await getManifest('library/alpine/manifests/3');
    t.equal(changed.status, 200);
    t.equal(changed.headers.get('docker-content-digest'), alpine2.digest, 'the new digest');
    await changed.arrayBuffer();
    seen = accessSince(hub.registry, mark).filter((e) => e.status !== 401);
    t.same(
      seen.map((e) => `${e.method} ${e.path}`),
      ['HEAD /v2/library/alpine/manifests/3', `GET /v2/library/alpine/manifests/${alpine2.digest}`],
      'HEAD, then GET of the new manifest by digest',
    );
  });

  await t.test('pushes into a mirrored namespace are refused; other repositories push normally', async (t) => {
    const post = await fetch(v2('library/alpine/blobs/uploads/'), { method: 'POST' });
    t.equal(post.status, 405);
    t.match(await post.json(), { errors: [{ code: 'UNSUPPORTED' }] });
    const put = await fetch(v2('org/app/manifests/v2'), {
      method: 'PUT',
      headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
      body: '{}',
    });
    t.equal(put.status, 405);
    t.match(await put.json(), { errors: [{ code: 'UNSUPPORTED' }] });
    const del = await fetch(v2(`library/alpine/manifests/${alpine.digest}`), { method: 'DELETE' });
    t.equal(del.status, 405, 'deletes too');
    await del.arrayBuffer();
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:mine`, dockerRef(berth.url, 'mine/app', 'v1')]);
    const pulled = await getManifest('mine/app/manifests/v1');
    t.equal(pulled.status, 200, 'a local push on the same instance');
    t.equal(pulled.headers.get('docker-content-digest'), mine.digest);
    await pulled.arrayBuffer();
  });

  await t.test('credentials sent to berth are never forwarded upstream', async (t) => {
    const watch = await startGateProxy(t, hub.registry.url);
    const anonymous = await startBerth(t, { proxy: { remoteurl: watch.url } });
    const clientAuth = `Basic ${Buffer.from('seeder:seeder-pw').toString('base64')}`;
    const issued = hub.issuerLog.length;
    const withClientCreds = await fetch(`${anonymous.url}/v2/private/secret/manifests/1`, { headers: { accept: ACCEPT, authorization: clientAuth } });
    t.equal(withClientCreds.status, 404, "the client's credentials did not open the private repository upstream");
    t.match(await withClientCreds.json(), { errors: [{ code: 'MANIFEST_UNKNOWN' }] });
    t.ok(watch.requests.length > 0, 'berth did ask the upstream');
    t.notOk(
      watch.requests.some((r) => r.authorization === clientAuth),
      "never with the client's Authorization header",
    );
    const tokens = hub.issuerLog.slice(issued).filter((l) => l.includes('token issued'));
    t.ok(tokens.length > 0, 'berth asked the token server');
    t.notOk(
      tokens.some((l) => l.includes('"seeder"')),
      "never as the client's account",
    );
    const viaMirrorCreds = await getManifest('private/secret/manifests/1');
    t.equal(viaMirrorCreds.status, 200, 'the configured upstream credentials did open it');
    t.equal(viaMirrorCreds.headers.get('docker-content-digest'), secret.digest);
    await viaMirrorCreds.arrayBuffer();
  });

  await t.test('upstream stopped: cached tags and digests still pull, uncached fails clearly', async (t) => {
    await hub.registry.stop();
    await age(tagLink('library/multi', '1'));
    const tag = await getManifest('library/multi/manifests/1');
    t.equal(tag.status, 200, 'a stale tag from its last known digest');
    t.equal(tag.headers.get('docker-content-digest'), multi.digest);
    await tag.arrayBuffer();
    const byDigest = await getManifest(`library/multi/manifests/${multi.images[0]?.manifest}`);
    t.equal(byDigest.status, 200);
    await byDigest.arrayBuffer();
    const layer = multi.images[0]?.layers[0] as string;
    const blob = await fetch(v2(`library/multi/blobs/${layer}`));
    t.equal(blob.status, 200);
    t.equal(sha256(Buffer.from(await blob.arrayBuffer())), layer);

    const uncached = await getManifest('library/never/manifests/1');
    t.equal(uncached.status, 503);
    t.match(await uncached.json(), { errors: [{ code: 'UNAVAILABLE', detail: { upstream: 'docker.io' } }] });
    const uncachedBlob = await fetch(v2(`library/multi/blobs/sha256:${'0'.repeat(64)}`));
    t.equal(uncachedBlob.status, 503);
    t.match(await uncachedBlob.json(), { errors: [{ code: 'UNAVAILABLE' }] });
    const nsShape = await getManifest('library/never/manifests/1?ns=docker.io');
    t.equal(nsShape.status, 503);
    await nsShape.arrayBuffer();
    const tags = await fetch(v2('library/multi/tags/list'));
    t.equal(tags.status, 200, 'the tag list from the cache');
    t.same(await tags.json(), { name: 'library/multi', tags: ['1'] });
    const downLogs = lines.filter((l) => l.includes('upstream unavailable'));
    t.equal(downLogs.length, 1, 'the outage is logged once');
  });

  await t.test('cached content not pulled within its ttl expires; local pushes stay', async (t) => {
    const expirer = createPullThrough(berth.config, { store: berth.app.berth.store, driver: berth.app.berth.driver, logger });
    t.ok(expirer);
    const now = await expirer?.expire();
    t.same(now, { manifests: 0, tags: 0, blobs: 0, repositories: 0 }, 'nothing pulled within the ttl is removed');
    const result = await expirer?.expire(Date.now() + 25 * 3_600_000);
    t.ok((result?.manifests ?? 0) > 0 && (result?.blobs ?? 0) > 0, 'cached manifests and blob links removed');
    await expirer?.close();
    const store = berth.app.berth.store;
    t.equal(await store.listTags('library/multi'), null, 'the cached repository is gone');
    t.same(await store.listTags('mine/app'), ['v1'], 'the local push is untouched');
    const local = await getManifest('mine/app/manifests/v1');
    t.equal(local.status, 200);
    await local.arrayBuffer();
  });
});
