import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test as Tap } from 'tap';
import { startBerth } from '../helpers/berth.js';
import { startDockerRegistry } from '../helpers/docker-registry.js';
import { freePort } from '../helpers/ports.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';

// registry:2's own Prometheus series (registry_http_*), served by berth beside its berth_* series, so dashboards made
// for CNCF Distribution carry over. The same push and pull runs against berth and Debian's docker-registry, and the
// registry_http_* series (names and label names) of both are compared.

/** Pushes an image, pulls it back, lists tags and the catalog: the calls a push and a pull make. */
async function pushAndPull(t: Tap, url: string): Promise<void> {
  const client = new RegistryClient(url);
  t.equal((await client.request('GET', '/v2/')).status, 200, `${url}: base`);
  const image = await client.pushImage('r2/app', 'v1', [randomLayer(3000)]);
  const pulled = await client.pull('r2/app', 'v1');
  t.same(pulled, [], `${url}: pulled completely`);
  t.equal((await client.request('GET', '/v2/r2/app/tags/list')).status, 200, `${url}: tags`);
  t.equal((await client.request('GET', '/v2/_catalog')).status, 200, `${url}: catalog`);
  t.equal((await client.request('GET', `/v2/r2/app/blobs/${image.config.digest}`)).status, 200, `${url}: blob`);
}

/** Scrapes `url` and returns its sample lines (no comments). */
async function scrape(t: Tap, url: string): Promise<string[]> {
  const res = await fetch(url);
  t.equal(res.status, 200, `scrape ${url}`);
  return (await res.text()).split('\n').filter((l) => l !== '' && !l.startsWith('#'));
}

/** The `registry_http_*` series of a scrape as `name{label,names}` (label values dropped, `le` kept as a name). */
function shapes(lines: string[]): Set<string> {
  const out = new Set<string>();
  for (const line of lines) {
    const m = /^(registry_http_[a-z_]+)(?:\{([^}]*)\})?/.exec(line);
    if (!m?.[1]) continue;
    const names = (m[2] ?? '')
      .split(',')
      .filter(Boolean)
      .map((kv) => kv.split('=')[0])
      .sort();
    out.add(`${m[1]}{${names.join(',')}}`);
  }
  return out;
}

/** Label values seen for one label of a series. */
function values(lines: string[], series: string, label: string): Set<string> {
  const out = new Set<string>();
  for (const line of lines) {
    if (!line.startsWith(`${series}{`)) continue;
    const m = new RegExp(`[{,]${label}="([^"]*)"`).exec(line);
    if (m?.[1] !== undefined) out.add(m[1]);
  }
  return out;
}

/** The value of the sample of `name` with exactly `labels`, undefined when the scrape has none. */
function sample(lines: string[], name: string, labels: Record<string, string>): number | undefined {
  for (const line of lines) {
    if (!line.startsWith(`${name}{`)) continue;
    const body = line.slice(name.length + 1, line.lastIndexOf('}'));
    const got = Object.fromEntries(body.split(',').map((kv) => [kv.split('=')[0], kv.slice(kv.indexOf('=') + 2, -1)]));
    if (Object.keys(got).length !== Object.keys(labels).length) continue;
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

t.test('registry:2 series after a push and a pull, as docker-registry exposes them', async (t) => {
  const berth = await startBerth(t);
  await pushAndPull(t, berth.url);
  const ours = await scrape(t, `${berth.url}/metrics`);

  t.equal(sample(ours, 'registry_http_requests_total', { code: '200', handler: 'base', method: 'get' }), 1, 'GET /v2/ counted as handler=base');
  t.equal(sample(ours, 'registry_http_requests_total', { code: '202', handler: 'blob_upload', method: 'post' }), 2, 'upload starts');
  t.equal(sample(ours, 'registry_http_requests_total', { code: '201', handler: 'blob_upload_chunk', method: 'put' }), 2, 'upload completions');
  t.equal(sample(ours, 'registry_http_requests_total', { code: '201', handler: 'manifest', method: 'put' }), 1, 'manifest push');
  t.ok((sample(ours, 'registry_http_requests_total', { code: '200', handler: 'manifest', method: 'get' }) ?? 0) >= 1, 'manifest pull');
  t.ok((sample(ours, 'registry_http_requests_total', { code: '200', handler: 'blob', method: 'get' }) ?? 0) >= 2, 'blob pulls');
  t.equal(sample(ours, 'registry_http_requests_total', { code: '200', handler: 'tags', method: 'get' }), 1, 'tags list');
  t.equal(sample(ours, 'registry_http_requests_total', { code: '200', handler: 'catalog', method: 'get' }), 1, 'catalog');
  t.equal(sample(ours, 'registry_http_in_flight_requests', { handler: 'blob' }), 0, 'nothing left in flight');
  t.equal(sample(ours, 'registry_http_request_duration_seconds_count', { handler: 'tags', method: 'get' }), 1, 'latency observed');
  t.equal(
    sample(ours, 'registry_http_request_duration_seconds_bucket', { handler: 'tags', method: 'get', le: '60' }),
    1,
    'registry:2 latency buckets (le=60)',
  );
  t.ok(
    (sample(ours, 'registry_http_request_size_bytes_sum', { handler: 'blob_upload_chunk' }) ?? 0) >= 3000,
    'request sizes include the uploaded layer',
  );
  t.ok((sample(ours, 'registry_http_response_size_bytes_sum', { handler: 'blob' }) ?? 0) >= 3000, 'response sizes include the pulled layer');
  t.ok(
    sample(ours, 'registry_http_response_size_bytes_bucket', { handler: 'blob', le: '2.147483648e+09' }) !== undefined ||
      sample(ours, 'registry_http_response_size_bytes_bucket', { handler: 'blob', le: '2147483648' }) !== undefined,
    'registry:2 size buckets up to 2 GiB',
  );
  t.notOk(values(ours, 'registry_http_requests_total', 'handler').has('metrics'), 'the scrape itself is not a registry:2 handler');

  // The same operations against Debian's docker-registry with its debug server's Prometheus endpoint.
  const root = await mkdtemp(join(tmpdir(), 'berth-r2metrics-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const debugPort = await freePort();
  const reference = await startDockerRegistry(t, {
    rootDirectory: root,
    extraConfig: { http: { debug: { addr: `127.0.0.1:${debugPort}`, prometheus: { enabled: true, path: '/metrics' } } } },
  });
  await pushAndPull(t, reference.url);
  const theirs = await scrape(t, `http://127.0.0.1:${debugPort}/metrics`);

  const theirShapes = shapes(theirs);
  t.ok(theirShapes.size > 0, 'docker-registry exposes registry_http_* series');
  t.same([...shapes(ours)].sort(), [...theirShapes].sort(), 'the same registry_http_* series and label names as docker-registry');
  for (const series of ['registry_http_requests_total', 'registry_http_in_flight_requests', 'registry_http_response_size_bytes_count']) {
    t.same([...values(ours, series, 'handler')].sort(), [...values(theirs, series, 'handler')].sort(), `${series}: the same handler values`);
  }
  t.same(
    [...values(ours, 'registry_http_request_duration_seconds_bucket', 'le')].sort(),
    [...values(theirs, 'registry_http_request_duration_seconds_bucket', 'le')].sort(),
    'the same latency buckets',
  );
});
