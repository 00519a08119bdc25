import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, RegistryClient, randomLayer } from '../helpers/registry-client.js';
import { startBerth } from '../helpers/berth.js';

const V2 = 'docker/registry/v2';

interface Json {
  [k: string]: unknown;
}

async function getJson(url: string, init: RequestInit = {}): Promise<{ status: number; body: Json; headers: Headers }> {
  const res = await fetch(url, init);
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Json) : {}, headers: res.headers };
}

/** Pushes an image whose config carries `labels`/`history` and whose manifest carries `annotations`. */
async function pushRich(
  client: RegistryClient,
  repo: string,
  tag: string,
  options: {
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    platform?: { os: string; architecture: string; variant?: string };
  } = {},
) {
  const layers = [randomLayer(1000), randomLayer(2000)];
  const layerDescs = [];
  for (const l of layers) layerDescs.push({ mediaType: OCI_LAYER, digest: (await client.pushBlob(repo, l)).digest, size: l.length });
  const config = {
    created: '2026-11-30T10:00:00Z',
    os: options.platform?.os ?? 'linux',
    architecture: options.platform?.architecture ?? 'amd64',
    ...(options.platform?.variant ? { variant: options.platform.variant } : {}),
    config: { Env: ['PATH=/usr/bin', 'A=1'], Entrypoint: ['/bin/app'], Cmd: ['--serve'], Labels: options.labels ?? {} },
    history: [
      { created: '2026-11-30T09:00:00Z', created_by: 'ADD rootfs' },
      { created: '2026-11-30T09:30:00Z', created_by: 'ENV A=1', empty_layer: true },
      { created: '2026-11-30T10:00:00Z', created_by: 'COPY app /bin/app' },
    ],
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const c = await client.pushBlob(repo, configBytes);
  const body: Json = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: c.digest, size: configBytes.length },
    layers: layerDescs,
  };
  if (options.annotations) body.annotations = options.annotations;
  const manifest = await client.putManifest(repo, tag, body, OCI_MANIFEST);
  return { manifest, configSize: configBytes.length, layerSizes: layers.map((l) => l.length) };
}

t.test('catalog, search and the JSON API without auth', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  await berth.app.berth.catalog.idle();

  const web = await pushRich(client, 'web', 'v1', {
    annotations: { 'org.opencontainers.image.description': 'The web server' },
    labels: { 'org.opencontainers.image.description': 'label text (annotation wins)', evil: '<script>alert(1)</script>', long: 'x'.repeat(10_000) },
  });
  await pushRich(client, 'tools/web', 'latest', { labels: { 'org.opencontainers.image.description': 'from the label' } });
  await client.pushImage('webapp', '1', [randomLayer()]);
  await client.pushImage('myweb', '1', [randomLayer()]);
  await client.pushImage('other', '1', [randomLayer()]);

  t.test('_catalog: from the index, sorted, default and maximum page size, Link', async (t) => {
    const all = await getJson(`${berth.url}/v2/_catalog`);
    t.equal(all.status, 200);
    t.strictSame(all.body.repositories, ['myweb', 'other', 'tools/web', 'web', 'webapp']);
    const first = await getJson(`${berth.url}/v2/_catalog?n=2`);
    t.strictSame(first.body.repositories, ['myweb', 'other']);
    t.equal(first.headers.get('link'), '</v2/_catalog?n=2&last=other>; rel="next"');
    const next = await getJson(`${berth.url}/v2/_catalog?n=2&last=other`);
    t.strictSame(next.body.repositories, ['tools/web', 'web']);
    const end = await getJson(`${berth.url}/v2/_catalog?n=2&last=web`);
    t.strictSame(end.body.repositories, ['webapp']);
    t.equal(end.headers.get('link'), null, 'no Link on the last page');
    const tooMany = await getJson(`${berth.url}/v2/_catalog?n=1001`);
    t.equal(tooMany.status, 400);
    t.equal((tooMany.body.errors as Json[])[0]?.code, 'PAGINATION_NUMBER_INVALID');
  });

  t.test('v1 search: contains, case-insensitive, exact and prefix first, description', async (t) => {
    await fetch(`${berth.url}/v1/_ping`).then((r) => t.equal(r.status, 200));
    const r = await getJson(`${berth.url}/v1/search?q=WEB&n=25`);
    t.equal(r.status, 200);
    t.match(r.body, { num_results: 4, query: 'WEB', page: 1, page_size: 25, num_pages: 1 });
    const results = r.body.results as Json[];
    t.strictSame(
      results.map((x) => x.name),
      ['tools/web', 'web', 'webapp', 'myweb'],
    );
    t.strictSame(results[1], { name: 'web', description: 'The web server', star_count: 0, is_official: false, is_automated: false });
    t.equal(results[0]?.description, 'from the label');
    t.equal(results[2]?.description, '');
    const paged = await getJson(`${berth.url}/v1/search?q=web&n=3&page=2`);
    t.strictSame(
      (paged.body.results as Json[]).map((x) => x.name),
      ['myweb'],
    );
    t.equal(paged.body.num_pages, 2);
  });

  t.test('API: repositories, tags, manifest detail', async (t) => {
    const list = await getJson(`${berth.url}/api/v1/repositories?n=2`);
    t.equal(list.status, 200);
    t.equal((list.body.repositories as Json[]).length, 2);
    t.equal(list.body.next, 'other');
    const q = await getJson(`${berth.url}/api/v1/repositories?q=web`);
    const w = (q.body.repositories as Json[]).find((x) => x.name === 'web') as Json;
    t.equal(w.tagCount, 1);
    t.equal(w.size, web.manifest.size + web.configSize + 3000, 'size: manifest, config and layers');
    t.type(w.lastPush, 'string');

    const tags = await getJson(`${berth.url}/api/v1/repositories/web/tags`);
    t.equal(tags.status, 200);
    t.match(tags.body.tags, [
      { name: 'v1', digest: web.manifest.digest, mediaType: OCI_MANIFEST, size: w.size, platforms: ['linux/amd64'], created: '2026-11-30T10:00:00Z' },
    ]);

    const detail = await getJson(`${berth.url}/api/v1/repositories/web/manifests/v1`);
    t.equal(detail.status, 200);
    const config = detail.body.config as Json;
    t.match(config, { os: 'linux', architecture: 'amd64', env: ['PATH=/usr/bin', 'A=1'], entrypoint: ['/bin/app'], cmd: ['--serve'] });
    t.equal((config.labels as Json).evil, '<script>alert(1)</script>', 'labels are data, as pushed');
    t.equal(((config.labels as Json).long as string).length, 4096, 'bounded');
    t.strictSame(config.history, [
      { created: '2026-11-30T09:00:00Z', createdBy: 'ADD rootfs', emptyLayer: false, size: 1000 },
      { created: '2026-11-30T09:30:00Z', createdBy: 'ENV A=1', emptyLayer: true, size: null },
      { created: '2026-11-30T10:00:00Z', createdBy: 'COPY app /bin/app', emptyLayer: false, size: 2000 },
    ]);
    t.equal((detail.body.layers as Json[]).length, 2);

    const unknown = await getJson(`${berth.url}/api/v1/repositories/nope/tags`);
    t.equal(unknown.status, 404);
    t.equal((unknown.body.errors as Json[])[0]?.code, 'NAME_UNKNOWN');
    const noManifest = await getJson(`${berth.url}/api/v1/repositories/web/manifests/v9`);
    t.equal((noManifest.body.errors as Json[])[0]?.code, 'MANIFEST_UNKNOWN');
  });

  t.test('API: an index with platforms, untagged manifests, referrers', async (t) => {
    const amd = await client.pushImage('multi', null, [randomLayer()], { platform: { os: 'linux', architecture: 'amd64' } });
    const arm = await client.pushImage('multi', null, [randomLayer()], { platform: { os: 'linux', architecture: 'arm64' } });
    const children = [
      { ...amd.manifest, platform: { os: 'linux', architecture: 'amd64' } },
      { ...arm.manifest, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ];
    const index = await client.putManifest('multi', 'latest', { schemaVersion: 2, mediaType: OCI_INDEX, manifests: children }, OCI_INDEX);
    const dangling = await client.pushImage('multi', null, [randomLayer()]);
    const sig = await client.pushReferrer('multi', index, 'application/vnd.example.signature', Buffer.from('sig'));

    const tags = await getJson(`${berth.url}/api/v1/repositories/multi/tags`);
    t.match(tags.body.tags, [{ name: 'latest', digest: index.digest, mediaType: OCI_INDEX, platforms: ['linux/amd64', 'linux/arm64/v8'] }]);
    t.equal((tags.body.tags as Json[]).length, 1);
    const withUntagged = await getJson(`${berth.url}/api/v1/repositories/multi/tags?untagged=1`);
    const untagged = (withUntagged.body.tags as Json[]).filter((x) => x.name === '');
    t.strictSame(
      untagged.map((x) => x.digest),
      [dangling.manifest.digest],
      'only the dangling image: not the index children, not the signature',
    );

    const detail = await getJson(`${berth.url}/api/v1/repositories/multi/manifests/${index.digest}`);
    t.strictSame(
      (detail.body.children as Json[]).map((c) => c.platform),
      ['linux/amd64', 'linux/arm64/v8'],
    );
    t.equal(detail.body.config, null);
    t.match(detail.body.referrers, [{ digest: sig.manifest.digest, artifactType: 'application/vnd.example.signature' }]);
  });

  t.test('a repository written straight into storage (as registry:2 would) appears after reconciling', async (t) => {
    await cp(join(berth.root, V2, 'repositories/other'), join(berth.root, V2, 'repositories/written/by/registry2'), { recursive: true });
    await berth.app.berth.catalog.rebuild();
    const all = await getJson(`${berth.url}/v2/_catalog`);
    t.ok((all.body.repositories as string[]).includes('written/by/registry2'));
    const s = await getJson(`${berth.url}/v1/search?q=registry2`);
    t.equal(s.body.num_results, 1);
  });

  t.test('deletes: tag, manifest, repository', async (t) => {
    const a = await client.pushImage('gone', 'a', [randomLayer()]);
    const shared = randomLayer();
    await client.pushImage('gone', 'b', [shared]);
    await client.pushImage('keeper', '1', [shared]);

    const delTag = await fetch(`${berth.url}/api/v1/repositories/gone/tags/b`, { method: 'DELETE' });
    t.equal(delTag.status, 202);
    t.equal((await getJson(`${berth.url}/api/v1/repositories?q=gone`)).body.repositories instanceof Array, true);
    t.match((await getJson(`${berth.url}/api/v1/repositories/gone`)).body, { tagCount: 1 });
    const delManifest = await fetch(`${berth.url}/api/v1/repositories/gone/manifests/${a.manifest.digest}`, { method: 'DELETE' });
    t.equal(delManifest.status, 202);
    t.equal((await client.getManifest('gone', 'a')).status, 404);
    t.equal((await fetch(`${berth.url}/api/v1/repositories/gone/tags/zz`, { method: 'DELETE' })).status, 404);

    // An unfinished upload goes with the repository.
    const start = await fetch(`${berth.url}/v2/gone/blobs/uploads/`, { method: 'POST' });
    const location = new URL(start.headers.get('location') ?? '', berth.url);

    const del = await fetch(`${berth.url}/api/v1/repositories/gone`, { method: 'DELETE' });
    t.equal(del.status, 202);
    t.notOk(((await getJson(`${berth.url}/v2/_catalog`)).body.repositories as string[]).includes('gone'), 'not in _catalog at once');
    t.equal((await getJson(`${berth.url}/v1/search?q=gone`)).body.num_results, 0, 'not found by search');
    t.equal((await getJson(`${berth.url}/api/v1/repositories/gone`)).status, 404);
    t.equal((await getJson(`${berth.url}/v2/gone/tags/list`)).status, 404);
    const patch = await fetch(location, { method: 'PATCH', body: Buffer.from('x'), headers: { 'Content-Type': 'application/octet-stream' } });
    t.ok(patch.status >= 400 && patch.status < 500, `the upload is gone (${patch.status})`);
    t.strictSame(await client.pull('keeper', '1'), [], 'a blob shared with another repository stays');
    const again = await getJson(`${berth.url}/api/v1/repositories/gone`, { method: 'DELETE' });
    t.equal(again.status, 404);
    t.equal((again.body.errors as Json[])[0]?.code, 'NAME_UNKNOWN');
  });

  t.test('usage', async (t) => {
    const u = await getJson(`${berth.url}/api/v1/usage`);
    t.equal(u.status, 200);
    t.ok((u.body.total as number) > 0);
    t.ok((u.body.repositories as Json[]).some((r) => r.name === 'web'));
    t.equal(u.body.lastGc, null);
  });

  t.test('bad input gets the error JSON', async (t) => {
    const bad = await getJson(`${berth.url}/api/v1/repositories/..%2fetc/tags`);
    t.equal(bad.status, 400);
    t.equal((bad.body.errors as Json[])[0]?.code, 'NAME_INVALID');
    const notThere = await getJson(`${berth.url}/api/v1/nothing`);
    t.equal(notThere.status, 404);
    const method = await getJson(`${berth.url}/api/v1/repositories`, { method: 'POST' });
    t.equal(method.status, 405);
    const badN = await getJson(`${berth.url}/api/v1/repositories?n=abc`);
    t.equal((badN.body.errors as Json[])[0]?.code, 'PAGINATION_NUMBER_INVALID');
  });
});

t.test('deletes disabled: the API refuses with UNSUPPORTED', async (t) => {
  const berth = await startBerth(t, { storage: { delete: { enabled: false } } });
  const client = new RegistryClient(berth.url);
  await client.pushImage('keep', '1', [randomLayer()]);
  for (const path of ['keep', 'keep/tags/1']) {
    const r = await getJson(`${berth.url}/api/v1/repositories/${path}`, { method: 'DELETE' });
    t.equal(r.status, 405, path);
    t.equal((r.body.errors as Json[])[0]?.code, 'UNSUPPORTED');
  }
  t.strictSame(await client.pull('keep', '1'), []);
});

t.test('a page costs work in proportion to the page, not to the registry (10 000 repositories)', async (t) => {
  const berth = await startBerth(t, { berth: { index: { reconcileinterval: 0 } } });
  const repos = join(berth.root, V2, 'repositories');
  for (let i = 0; i < 10_000; i++) await mkdir(join(repos, `r${String(i).padStart(5, '0')}`, '_layers'), { recursive: true });
  await writeFile(join(repos, 'r00000', '_layers', '.keep'), '');
  const { enumerateRepositories } = await import('../../src/storage/repositories.js');
  // Count driver calls while pages are answered.
  const driver = berth.app.berth.driver;
  const calls = { n: 0 };
  const counted = new Proxy(driver, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        calls.n++;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  let first = '';
  for await (const e of enumerateRepositories(counted, { startAfter: 'r04999' })) {
    first = e.name;
    break;
  }
  t.equal(first, 'r05000');
  t.ok(calls.n <= 6, `a storage walk for one name lists the top directory and the repositories next to after (${calls.n} calls)`);

  await berth.app.berth.catalog.rebuild();
  t.equal(await berth.app.berth.catalog.index.count(), 10_000);
  // From here on, a page reads nothing from storage at all.
  const before = calls.n;
  const real = berth.app.berth.driver;
  const spy = { n: 0 };
  for (const op of ['list', 'stat', 'getContent'] as const) {
    const orig = real[op].bind(real) as (...a: never[]) => unknown;
    (real as unknown as Record<string, unknown>)[op] = (...a: never[]) => {
      spy.n++;
      return orig(...a);
    };
  }
  const answers = await Promise.all(
    Array.from({ length: 30 }, (_, i) => getJson(`${berth.url}/v2/_catalog?n=1&last=r0${String(i).padStart(4, '0')}`)),
  );
  t.ok(answers.every((a) => a.status === 200 && (a.body.repositories as string[]).length === 1));
  t.equal(spy.n, 0, '30 parallel ?n=1 pages: no storage calls');
  const full = await getJson(`${berth.url}/v2/_catalog`);
  t.equal((full.body.repositories as string[]).length, 100, 'without n: a page of 100, not everything');
  t.ok(full.headers.get('link'));
  t.equal(calls.n, before);
});
