import { createServer, request as httpRequest, Agent } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { skipUnlessInstalled, startContainerd } from '../helpers/containers.js';
import { makeRunnableImageLayout, writeHostsToml } from '../helpers/cri.js';
import { startBerth } from '../helpers/berth.js';
import { startDockerRegistry } from '../helpers/docker-registry.js';
import { makeImageLayout } from '../helpers/oci-layout.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';
import { accessLog } from './helpers.js';

/**
 * Issue 15, chained mirrors and what a mirror shows: an origin registry (Distribution) ← a chained Distribution
 * mirror of it (`proxy.remoteurl`) ← a small front adding Docker Hub's rate-limit headers ← berth in the
 * single-upstream form. containerd's `?ns=docker.io` requests must be answered like a Docker daemon's plain ones
 * (registry:2 ignores `ns`); the metrics move with real pulls; `/readyz` lists the upstream's state.
 */

const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

interface RateFront {
  url: string;
  /** Requests seen (method and path). */
  requests: Array<{ method: string; path: string }>;
  stop(): Promise<void>;
}

/** An HTTP front that forwards to `target` and adds `ratelimit-limit: 100;w=21600`, `ratelimit-remaining: 5;w=21600`. */
async function startRateFront(t: { teardown(fn: () => unknown): void }, target: string): Promise<RateFront> {
  const upstream = new URL(target);
  const agent = new Agent({ keepAlive: true });
  const sockets = new Set<Socket>();
  const requests: RateFront['requests'] = [];
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', path: req.url ?? '' });
    const out = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host }, agent },
      (up) => {
        res.writeHead(up.statusCode ?? 502, { ...up.headers, 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '5;w=21600' });
        up.pipe(res);
      },
    );
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const s of sockets) s.destroy();
    agent.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.teardown(stop);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests, stop };
}

function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  return undefined;
}

t.test('berth in front of a chained Distribution mirror', async (t) => {
  const originRoot = await tempDir(t, 'berth-chain-origin-');
  const origin = await startDockerRegistry(t, { rootDirectory: originRoot });
  const chainRoot = await tempDir(t, 'berth-chain-mid-');
  const chained = await startDockerRegistry(t, { rootDirectory: chainRoot, extraConfig: { proxy: { remoteurl: origin.url } } });
  const front = await startRateFront(t, chained.url);

  const src = await tempDir(t, 'berth-chain-src-');
  const image = await makeImageLayout(src, { layers: [200_000, 30_000], tag: 'busy' });
  const otherDir = await tempDir(t, 'berth-chain-other-');
  const other = await makeRunnableImageLayout(otherDir, { tag: 'other', fileSize: 10_000 });
  await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:busy`, dockerRef(origin.url, 'library/busy', '1')]);
  await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${otherDir}:other`, dockerRef(origin.url, 'library/other', '1')]);
  const img = image.images[0];
  if (!img) throw new Error('no image generated');

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
  const berth = await startBerth(t, { proxy: { remoteurl: front.url, tagttl: '1h' } }, { logger });
  const metrics = async () => (await fetch(`${berth.url}/metrics`)).text();
  const name = new URL(front.url).host;

  await t.test("containerd's ?ns=docker.io is answered like a Docker daemon's plain request", async (t) => {
    const viaNs = await fetch(`${berth.url}/v2/library/busy/manifests/1?ns=docker.io`, { headers: { accept: ACCEPT } });
    t.equal(viaNs.status, 200, 'ns=docker.io: 200, not a 404 that sends containerd to the next host');
    t.equal(viaNs.headers.get('docker-content-digest'), img.manifest, "the origin's manifest digest");
    t.equal(viaNs.headers.get('oci-namespace'), 'docker.io', 'the namespace is echoed');
    const plain = await fetch(`${berth.url}/v2/library/busy/manifests/1`, { headers: { accept: ACCEPT } });
    t.equal(plain.status, 200);
    t.equal(plain.headers.get('docker-content-digest'), img.manifest, 'the plain request names the same manifest');
    const layer = await fetch(`${berth.url}/v2/library/busy/blobs/${img.layers[0]}?ns=docker.io`);
    t.equal(layer.status, 200);
    t.equal((await layer.arrayBuffer()).byteLength, 200_000, "the layer's bytes through the chain");
    const anyNs = await fetch(`${berth.url}/v2/library/busy/manifests/1?ns=registry.example.com`, { headers: { accept: ACCEPT } });
    t.equal(anyNs.status, 200, 'with the single-upstream form every ns maps to the one upstream (as registry:2 does)');
    await anyNs.arrayBuffer();
    t.ok(
      accessLog(chained).some((e) => e.method === 'GET' && e.path === `/v2/library/busy/blobs/${img.layers[0]}`),
      'the chained mirror served the layer',
    );
    t.ok(
      accessLog(origin).some((e) => e.method === 'GET' && e.path === `/v2/library/busy/blobs/${img.layers[0]}`),
      'and got it from the origin',
    );
  });

  await t.test(
    'containerd with hosts.toml pulls docker.io images through the chain',
    { skip: skipUnlessInstalled('containerd', 'ctr') },
    async (t) => {
      const dir = await tempDir(t, 'berth-chain-ctd-');
      const hostsDir = join(dir, 'hosts');
      await writeHostsToml(hostsDir, 'docker.io', { server: 'http://127.0.0.1:1', mirror: berth.url });
      const ctd = await startContainerd(t);
      await ctd.ctr(['image', 'pull', '--hosts-dir', hostsDir, 'docker.io/library/other:1']);
      const listed = (await ctd.ctr(['image', 'ls'])).stdout;
      t.match(listed, other.manifest, "containerd has the origin's manifest digest");
    },
  );

  await t.test('metrics move with real pulls', async (t) => {
    const before = await metrics();
    const missesBefore = sample(before, `berth_proxy_cache_misses_total{upstream="${name}",kind="blob"}`) ?? 0;
    t.ok(missesBefore >= 1, 'the cold layer was a blob miss');
    t.ok((sample(before, `berth_proxy_cache_misses_total{upstream="${name}",kind="manifest"}`) ?? 0) >= 1, 'the first manifest was a miss');
    t.ok(
      (sample(before, `berth_proxy_upstream_fetched_bytes_total{upstream="${name}"}`) ?? 0) >= 200_000,
      'bytes fetched from the upstream count the layer',
    );
    t.equal(sample(before, `berth_proxy_upstream_ratelimit_limit{upstream="${name}"}`), 100, 'ratelimit-limit as a gauge');
    t.equal(sample(before, `berth_proxy_upstream_ratelimit_remaining{upstream="${name}"}`), 5, 'ratelimit-remaining as a gauge');
    t.equal(sample(before, `berth_proxy_fills_in_progress{upstream="${name}"}`), 0, 'no fill left running');
    t.ok(
      lines.some((l) => l.includes('few pulls left') && l.includes('"remaining":5')),
      'a log line says few pulls are left',
    );

    const dest = await tempDir(t, 'berth-chain-dest-');
    await skopeo(['copy', '--src-tls-verify=false', dockerRef(berth.url, 'library/busy', '1'), `oci:${dest}:busy`]);
    const warmed = await metrics();
    const servedBefore = sample(warmed, `berth_proxy_cache_served_bytes_total{upstream="${name}"}`) ?? 0;
    const dest2 = await tempDir(t, 'berth-chain-dest2-');
    await skopeo(['copy', '--src-tls-verify=false', dockerRef(berth.url, 'library/busy', '1'), `oci:${dest2}:busy`]);
    const after = await metrics();
    t.ok((sample(after, `berth_proxy_cache_hits_total{upstream="${name}",kind="blob"}`) ?? 0) >= 2, 'a warm pull: blob hits');
    t.ok((sample(after, `berth_proxy_cache_hits_total{upstream="${name}",kind="manifest"}`) ?? 0) >= 1, 'a warm pull: manifest hits');
    t.ok(
      (sample(after, `berth_proxy_cache_served_bytes_total{upstream="${name}"}`) ?? 0) - servedBefore >= 230_000,
      'bytes served from the cache count both layers',
    );
  });

  await t.test('/readyz lists the upstream; a down upstream leaves the replica ready', async (t) => {
    const ready = await fetch(`${berth.url}/readyz`);
    t.equal(ready.status, 200);
    const body = (await ready.json()) as { upstreams: Array<{ name: string; state: string; downSince?: string; rateLimit?: unknown }> };
    t.match(
      body.upstreams,
      [{ name, state: 'degraded', rateLimit: { limit: 100, remaining: 5 } }],
      'answering, but few pulls left in its rate limit: degraded',
    );
    await front.stop();
    const cold = await fetch(`${berth.url}/v2/library/never/manifests/1`, { headers: { accept: ACCEPT } });
    t.equal(cold.status, 503, 'uncached content: UNAVAILABLE');
    await cold.arrayBuffer();
    const cached = await fetch(`${berth.url}/v2/library/busy/manifests/1`, { headers: { accept: ACCEPT } });
    t.equal(cached.status, 200, 'cached content still serves');
    await cached.arrayBuffer();
    const down = await fetch(`${berth.url}/readyz`);
    t.equal(down.status, 200, 'still ready');
    const downBody = (await down.json()) as { upstreams: Array<{ name: string; state: string; downSince?: string }> };
    t.equal(downBody.upstreams[0]?.state, 'down');
    t.ok(downBody.upstreams[0]?.downSince !== undefined && !Number.isNaN(Date.parse(downBody.upstreams[0].downSince)), 'down since a time');
    t.ok((sample(await metrics(), `berth_proxy_upstream_errors_total{upstream="${name}"}`) ?? 0) >= 1, 'upstream errors counted');
  });
});

t.test('multi-upstream form: a regional Docker Hub mirror with aliases [docker.io]', async (t) => {
  const originRoot = await tempDir(t, 'berth-alias-origin-');
  const origin = await startDockerRegistry(t, { rootDirectory: originRoot });
  const src = await tempDir(t, 'berth-alias-src-');
  const image = await makeImageLayout(src, { layers: [5000], tag: 'tiny' });
  await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:tiny`, dockerRef(origin.url, 'library/tiny', '1')]);
  const berth = await startBerth(t, {
    proxy: {
      upstreams: [
        { name: 'hub-mirror.example', url: origin.url, aliases: ['docker.io'] },
        { name: 'ghcr.io', url: 'http://127.0.0.1:1' },
      ],
    },
  });
  const viaNs = await fetch(`${berth.url}/v2/library/tiny/manifests/1?ns=docker.io`, { headers: { accept: ACCEPT } });
  t.equal(viaNs.status, 200, 'ns=docker.io selects the upstream listing docker.io in its aliases');
  t.equal(viaNs.headers.get('docker-content-digest'), image.digest);
  const short = await fetch(`${berth.url}/v2/tiny/manifests/1?ns=docker.io`, { headers: { accept: ACCEPT } });
  t.equal(short.status, 200, 'a Docker Hub mirror: a one-component name means library/<name>');
  await short.arrayBuffer();
  const unclaimed = await fetch(`${berth.url}/v2/library/tiny/manifests/1?ns=quay.io`, { headers: { accept: ACCEPT } });
  t.equal(unclaimed.status, 404, 'an ns no upstream claims is still unknown in the multi-upstream form');
  await unclaimed.arrayBuffer();
});
