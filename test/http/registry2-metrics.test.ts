import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test as Tap } from 'tap';
import { spawnBerth } from '../helpers/berth-process.js';
import { startDockerRegistry } from '../helpers/docker-registry.js';
import { freePort } from '../helpers/ports.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';

// registry:2's own Prometheus series (registry_http_*, registry_storage_action_seconds), served by berth beside its
// berth_* series on registry:2's debug address, so dashboards and recording rules made for CNCF Distribution carry
// over. The same push and pull runs against a berth process and Debian's docker-registry, and the registry_* series
// of both are compared: names, label names, label values, buckets, and the text of the bucket labels (`le` as Go
// writes it).

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

/** The `registry_*` series of a scrape as `name{label,names}` (label values dropped, `le` kept as a name). */
function shapes(lines: string[]): Set<string> {
  const out = new Set<string>();
  for (const line of lines) {
    const m = /^(registry_[a-z_]+)(?:\{([^}]*)\})?/.exec(line);
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

/** The label part (`name{...}`, value dropped) of every sample line of a series that starts with `prefix`, in order. */
function labelTexts(lines: string[], prefix: string): string[] {
  return lines.filter((l) => l.startsWith(prefix)).map((l) => l.slice(0, l.lastIndexOf(' ')));
}

/** Distribution 2.8's storage driver actions (what its `action` label takes), and the two berth adds. */
const DISTRIBUTION_ACTIONS = ['Delete', 'GetContent', 'List', 'Move', 'PutContent', 'Stat', 'URLFor'];
const BERTH_ONLY_ACTIONS = ['Reader', 'Writer'];

t.test('registry:2 series after a push and a pull, as docker-registry exposes them', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'berth-r2metrics-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await mkdir(join(root, 'berth'));
  // berth as `berth serve` runs it, configured as registry:2 is: the metrics on http.debug.addr.
  const berthDebugPort = await freePort();
  const berth = await spawnBerth(t, {
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: join(root, 'berth'),
    REGISTRY_STORAGE_DELETE_ENABLED: 'true',
    REGISTRY_HTTP_DEBUG_ADDR: `127.0.0.1:${berthDebugPort}`,
    REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED: 'true',
  });
  const before = await scrape(t, `http://127.0.0.1:${berthDebugPort}/metrics`);
  await pushAndPull(t, berth.url);
  const ours = await scrape(t, `http://127.0.0.1:${berthDebugPort}/metrics`);
  t.equal((await fetch(`${berth.url}/metrics`)).status, 404, 'not on the registry port when http.debug serves them');

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
    sample(ours, 'registry_http_response_size_bytes_bucket', { handler: 'blob', le: '2.147483648e+09' }) !== undefined,
    'registry:2 size buckets up to 2 GiB, the bound written as Go writes it',
  );
  t.notOk(values(ours, 'registry_http_requests_total', 'handler').has('metrics'), 'the scrape itself is not a registry:2 handler');

  // Storage driver calls, timed per action; the push wrote and the pull read through the driver.
  const storage = 'registry_storage_action_seconds';
  t.same([...values(ours, `${storage}_count`, 'driver')], ['filesystem'], 'driver label: the driver as registry:2 names it');
  const moved = (action: string): number =>
    (sample(ours, `${storage}_count`, { action, driver: 'filesystem' }) ?? 0) -
    (sample(before, `${storage}_count`, { action, driver: 'filesystem' }) ?? 0);
  for (const action of ['PutContent', 'GetContent', 'Stat', 'Writer', 'Reader']) t.ok(moved(action) >= 1, `${action} timed during the push and pull`);
  t.ok(moved('Reader') >= 2, 'each pulled blob opened a reader');
  t.equal(
    sample(ours, `${storage}_bucket`, { action: 'PutContent', driver: 'filesystem', le: '+Inf' }),
    sample(ours, `${storage}_count`, { action: 'PutContent', driver: 'filesystem' }),
    'every observation falls in a bucket',
  );
  for (const action of values(ours, `${storage}_count`, 'action')) {
    t.ok([...DISTRIBUTION_ACTIONS, ...BERTH_ONLY_ACTIONS].includes(action), `action ${action} is one of Distribution's storage action names`);
  }

  // The same operations against Debian's docker-registry with its debug server's Prometheus endpoint.
  const debugPort = await freePort();
  const reference = await startDockerRegistry(t, {
    rootDirectory: join(root, 'reference'),
    extraConfig: { http: { debug: { addr: `127.0.0.1:${debugPort}`, prometheus: { enabled: true, path: '/metrics' } } } },
  });
  await pushAndPull(t, reference.url);
  const theirs = await scrape(t, `http://127.0.0.1:${debugPort}/metrics`);

  const theirShapes = shapes(theirs);
  t.ok(theirShapes.has(`${storage}_bucket{action,driver,le}`), 'docker-registry exposes registry_storage_action_seconds');
  t.same([...shapes(ours)].sort(), [...theirShapes].sort(), 'the same registry_* series and label names as docker-registry');
  for (const series of ['registry_http_requests_total', 'registry_http_in_flight_requests', 'registry_http_response_size_bytes_count']) {
    t.same([...values(ours, series, 'handler')].sort(), [...values(theirs, series, 'handler')].sort(), `${series}: the same handler values`);
  }
  for (const series of [`registry_http_request_duration_seconds_bucket`, 'registry_http_response_size_bytes_bucket', `${storage}_bucket`]) {
    t.same([...values(ours, series, 'le')].sort(), [...values(theirs, series, 'le')].sort(), `${series}: the same buckets`);
  }
  t.same([...values(ours, `${storage}_count`, 'driver')], [...values(theirs, `${storage}_count`, 'driver')], 'the same driver label');
  const theirActions = [...values(theirs, `${storage}_count`, 'action')];
  t.same(
    theirActions.filter((a) => !DISTRIBUTION_ACTIONS.includes(a)),
    [],
    `docker-registry's actions are the ones listed here (${theirActions.join(', ')})`,
  );
  for (const action of ['PutContent', 'GetContent', 'Stat']) {
    t.ok(theirActions.includes(action) && moved(action) >= 1, `${action}: recorded by both for the same traffic`);
  }
  // The text itself, line for line: label order (sorted, `le` last) and the bounds as Go formats them.
  for (const prefix of [
    'registry_http_response_size_bytes_bucket{handler="blob"',
    'registry_http_request_duration_seconds_bucket{handler="base",method="get"',
    'registry_http_requests_total{code="200",handler="base"',
    `${storage}_bucket{action="GetContent",driver="filesystem"`,
    `${storage}_sum{action="PutContent",driver="filesystem"`,
  ]) {
    const mine = labelTexts(ours, prefix);
    t.ok(mine.length > 0, `${prefix}: berth has it`);
    t.same(mine, labelTexts(theirs, prefix), `${prefix}: the same label text as docker-registry`);
  }
});
