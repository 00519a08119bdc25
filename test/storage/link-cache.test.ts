import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { runGc } from '../../src/gc/collector.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { PathNotFoundError } from '../../src/storage/driver.js';
import { CachingDriver, DerivedCache, LinkCache, type InvalidationChannel } from '../../src/storage/link-cache.js';
import { RegistryStore } from '../../src/storage/registry-store.js';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import { paths } from '../../src/storage/paths.js';
import { spawnBerth } from '../helpers/berth-process.js';
import { startBerth } from '../helpers/berth.js';
import { tempDir } from '../helpers/ports.js';
import { startRedis } from '../helpers/redis.js';

/**
 * Issue 16: tags, repository links and blob sizes are served from memory (src/storage/link-cache.ts). What a client
 * sees must not change: a moved tag, a deleted tag, manifest or blob, and what gc removes are seen by the very next
 * request, on the process that made the change and (through Redis pub/sub) on every other process.
 */

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

async function pushBlob(url: string, repo: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const res = await fetch(`${url}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: data });
  await res.arrayBuffer();
  if (res.status !== 201) throw new Error(`blob push answered ${res.status}`);
  return digest;
}

/** Pushes a fresh one-layer image to `url` as `repo:tag` (or untagged, by digest, when tag is undefined). */
async function pushImage(url: string, repo: string, tag: string | undefined): Promise<string> {
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, n: randomBytes(8).toString('hex') }),
  );
  const layer = randomBytes(512);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await pushBlob(url, repo, config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: await pushBlob(url, repo, layer), size: layer.length }],
    }),
  );
  const digest = sha256(manifest);
  const res = await fetch(`${url}/v2/${repo}/manifests/${tag ?? digest}`, {
    method: 'PUT',
    body: manifest,
    headers: { 'content-type': OCI_MANIFEST },
  });
  await res.arrayBuffer();
  if (res.status !== 201) throw new Error(`manifest push answered ${res.status}`);
  return digest;
}

/** GET of a manifest: status and Docker-Content-Digest. */
async function getManifest(url: string, repo: string, ref: string): Promise<{ status: number; digest: string | null }> {
  const res = await fetch(`${url}/v2/${repo}/manifests/${ref}`, { headers: { accept: OCI_MANIFEST } });
  await res.arrayBuffer();
  return { status: res.status, digest: res.headers.get('docker-content-digest') };
}

async function status(url: string, method: string, path: string): Promise<number> {
  const res = await fetch(`${url}${path}`, { method });
  await res.arrayBuffer();
  return res.status;
}

t.test('one process: every change is seen by the next request', async (t) => {
  const berth = await startBerth(t);
  const url = berth.url;
  const repo = 'cache/one';

  const d1 = await pushImage(url, repo, 'v1');
  // Read twice: the second answer comes from the cache.
  t.same(await getManifest(url, repo, 'v1'), { status: 200, digest: d1 }, 'v1 names the first image');
  t.same(await getManifest(url, repo, 'v1'), { status: 200, digest: d1 }, 'and again');
  t.equal((await getManifest(url, repo, 'v2')).status, 404, 'v2 is unknown');

  const d2 = await pushImage(url, repo, 'v1');
  t.same(await getManifest(url, repo, 'v1'), { status: 200, digest: d2 }, 'after moving v1, the next GET names the new image');
  await pushImage(url, repo, 'v2');
  t.equal((await getManifest(url, repo, 'v2')).status, 200, 'a tag unknown a moment ago is found once pushed');

  t.equal(await status(url, 'DELETE', `/v2/${repo}/manifests/v1`), 202, 'DELETE of tag v1');
  t.equal((await getManifest(url, repo, 'v1')).status, 404, 'the deleted tag is gone at once');
  t.same(await getManifest(url, repo, d2), { status: 200, digest: d2 }, 'its manifest stays');

  t.equal(await status(url, 'DELETE', `/v2/${repo}/manifests/${d2}`), 202, 'DELETE of the manifest');
  t.equal((await getManifest(url, repo, d2)).status, 404, 'the deleted manifest is gone at once');

  const blob = randomBytes(1000);
  const bd = await pushBlob(url, repo, blob);
  t.equal(await status(url, 'HEAD', `/v2/${repo}/blobs/${bd}`), 200, 'the blob is there');
  t.equal(await status(url, 'DELETE', `/v2/${repo}/blobs/${bd}`), 202, 'DELETE of the blob');
  t.equal(await status(url, 'HEAD', `/v2/${repo}/blobs/${bd}`), 404, 'the deleted blob is gone at once');
  t.equal(await pushBlob(url, repo, blob), bd, 'pushed again');
  t.equal(await status(url, 'GET', `/v2/${repo}/blobs/${bd}`), 200, 'and found again at once');

  // gc (here through the app's own driver, as the scheduled gc runs) deletes an untagged manifest.
  const untagged = await pushImage(url, repo, undefined);
  t.same(await getManifest(url, repo, untagged), { status: 200, digest: untagged }, 'an untagged manifest is served');
  const result = await runGc(berth.app.berth.driver, { deleteUntagged: true, graceMs: 0 });
  t.ok(
    result.deletions.some((d) => d.kind === 'manifest' && d.digest === untagged),
    'gc deletes it',
  );
  t.equal((await getManifest(url, repo, untagged)).status, 404, 'and the next GET no longer finds it');
});

t.test('two processes on one storage and one Redis: a change on one is seen on the other at once', async (t) => {
  const redis = await startRedis(t);
  const root = await tempDir(t, 'berth-link-cache-');
  const env = {
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: root,
    REGISTRY_STORAGE_DELETE_ENABLED: 'true',
    REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED: 'false',
    REGISTRY_REDIS_ADDR: redis.addr,
    REGISTRY_LOG_LEVEL: 'warn',
    // Entries would otherwise live long enough for the test; a day makes sure only invalidation can refresh them.
    REGISTRY_BERTH_LINKCACHE_TTL: '24h',
  };
  const a = await spawnBerth(t, env, { name: 'berth A' });
  const b = await spawnBerth(t, env, { name: 'berth B' });
  const repo = 'cache/two';

  const d1 = await pushImage(a.url, repo, 'latest');
  for (let i = 0; i < 3; i++) t.same(await getManifest(b.url, repo, 'latest'), { status: 200, digest: d1 }, `B serves latest (${i + 1})`);
  t.equal((await getManifest(b.url, repo, 'next')).status, 404, 'B does not know next');

  for (let round = 0; round < 5; round++) {
    const d = await pushImage(a.url, repo, 'latest');
    t.same(await getManifest(b.url, repo, 'latest'), { status: 200, digest: d }, `round ${round}: latest moved on A, B names the new image at once`);
  }
  await pushImage(b.url, repo, 'next');
  t.equal((await getManifest(a.url, repo, 'next')).status, 200, 'a tag pushed to B is found on A');
  t.equal((await getManifest(b.url, repo, 'next')).status, 200, 'and on B');

  t.equal(await status(a.url, 'DELETE', `/v2/${repo}/manifests/latest`), 202, 'latest deleted on A');
  t.equal((await getManifest(b.url, repo, 'latest')).status, 404, 'B no longer finds it');
});

t.test('the cache itself', async (t) => {
  const root = await tempDir(t, 'berth-link-cache-unit-');
  const inner = new FilesystemDriver({ rootDirectory: root });
  let now = 0;
  const cache = new LinkCache({ ttlMs: 1000, maxEntries: 3, now: () => now });
  const driver = new CachingDriver(inner, cache);
  const link = (tag: string) => paths.tagCurrentLink('repo', tag);

  await inner.putContent(link('a'), Buffer.from('one'));
  t.equal((await driver.getContent(link('a'))).toString(), 'one', 'read through');
  await inner.putContent(link('a'), Buffer.from('two'));
  t.equal((await driver.getContent(link('a'))).toString(), 'one', 'a change behind its back is not seen while fresh');
  now = 1000;
  t.equal((await driver.getContent(link('a'))).toString(), 'two', 'but is once the entry expires');

  await t.rejects(driver.getContent(link('b')), PathNotFoundError, 'a missing link');
  await driver.putContent(link('b'), Buffer.from('b'));
  t.equal((await driver.getContent(link('b'))).toString(), 'b', 'a cached miss is dropped when the link is written');

  await driver.delete(paths.tagDir('repo', 'b'));
  await t.rejects(driver.getContent(link('b')), PathNotFoundError, 'deleting a directory drops the links under it');

  // A read that overlaps a change must not put what it read into the cache.
  const token = cache.begin();
  cache.drop([link('a')]);
  cache.set(link('a'), Buffer.from('stale'), token);
  t.equal((await driver.getContent(link('a'))).toString(), 'two', 'a read older than an invalidation is not stored');

  for (const tag of ['c', 'd', 'e', 'f']) await inner.putContent(link(tag), Buffer.from(tag));
  for (const tag of ['c', 'd', 'e', 'f']) await driver.getContent(link(tag));
  t.ok(cache.size <= 3, 'at most maxEntries entries');

  const uncached = driver.uncachedReads();
  await inner.putContent(link('f'), Buffer.from('changed'));
  t.equal((await uncached.getContent(link('f'))).toString(), 'changed', 'the uncached view reads storage');
  await uncached.putContent(link('f'), Buffer.from('again'));
  t.equal((await driver.getContent(link('f'))).toString(), 'again', 'and its changes invalidate the cache');
  await driver.close();
});

t.test("a tag's manifest, kept while the links it was read from are unchanged and fresh", async (t) => {
  const root = await tempDir(t, 'berth-link-cache-derived-');
  const inner = new FilesystemDriver({ rootDirectory: root });
  let now = 0;
  let live = true;
  // The invalidation channel's seam, held by the test: only whether it is live matters here.
  const channel: InvalidationChannel = {
    get live() {
      return live;
    },
    publish: async () => undefined,
    subscribe: () => undefined,
    close: async () => undefined,
  };
  const cache = new LinkCache({ ttlMs: 1000, maxEntries: 100, now: () => now, channel });
  const store = new RegistryStore(new CachingDriver(inner, cache));
  const repo = 'derived/app';

  /** Writes a manifest's content and revision link behind the cache's back; returns its digest. */
  async function manifest(n: number): Promise<Digest> {
    const config = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(Buffer.from('{}')), size: 2 };
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [], annotations: { n: String(n) } }));
    const d = parseDigest(sha256(bytes));
    await inner.putContent(paths.blobData(d), bytes);
    await inner.putContent(paths.revisionLink(repo, d), Buffer.from(d.value));
    return d;
  }
  const tagLink = paths.tagCurrentLink(repo, 'latest');
  const d1 = await manifest(1);
  const d2 = await manifest(2);
  const byTag = async () => (await store.manifestByTag(repo, 'latest'))?.digest.value ?? null;

  // The revision link of d1 enters the cache at 0 (a GET by digest), the tag link at 500.
  t.equal((await store.getManifest(repo, d1))?.digest.value, d1.value, 'd1 by digest');
  now = 500;
  await inner.putContent(tagLink, Buffer.from(d1.value));
  t.equal(await byTag(), d1.value, 'latest names d1');
  t.equal(await byTag(), d1.value, 'and again (kept)');

  // Behind the back (another program sharing the storage, no announcement): unseen while the entries are fresh,
  // and no longer served once the OLDEST of them expires (the revision link, read at 0), not the newest.
  await inner.delete(paths.revisionLink(repo, d1));
  now = 999;
  t.equal(await byTag(), d1.value, 'a change behind its back is not seen while both links are fresh');
  now = 1000;
  t.equal(await byTag(), null, 'but is once the older link expires (d1 no longer in the repository)');

  // A change through the cache is seen at once, whatever the clock.
  await inner.putContent(paths.revisionLink(repo, d1), Buffer.from(d1.value));
  now = 2000;
  t.equal(await byTag(), d1.value, 'd1 again');
  await store.driver.putContent(tagLink, Buffer.from(d2.value));
  t.equal(await byTag(), d2.value, 'a tag moved through the cache is seen by the next read');
  await inner.putContent(tagLink, Buffer.from(d1.value));
  cache.drop([tagLink]);
  t.equal(await byTag(), d1.value, 'any change the cache hears of (here announced by another process) drops what was kept');

  // While the invalidation channel is down, nothing is served from memory.
  now = 2100;
  t.equal(await byTag(), d1.value, 'd1, kept');
  live = false;
  await inner.putContent(tagLink, Buffer.from(d2.value));
  t.equal(await byTag(), d2.value, 'with the channel down, storage is read');
});

t.test("what is kept beside the links is bounded by the link cache's entries, and by weight when given", async (t) => {
  const root = await tempDir(t, 'berth-link-cache-bounds-');
  const inner = new FilesystemDriver({ rootDirectory: root });
  const cache = new LinkCache({ ttlMs: 60_000, maxEntries: 4 });
  const driver = new CachingDriver(inner, cache);
  const link = (tag: string) => paths.tagCurrentLink('repo', tag);
  for (const tag of ['a', 'b', 'c', 'd', 'e']) {
    await inner.putContent(link(tag), Buffer.from(tag));
    await driver.getContent(link(tag));
  }
  const derived = new DerivedCache<Buffer>(cache, { weigh: (b) => b.length, maxWeight: 1600 });
  const keep = (tag: string, bytes: number) => derived.set('repo', tag, Buffer.alloc(bytes), derived.begin(), [link(tag)]);

  keep('b', 200);
  t.equal(derived.get('repo', 'b'), undefined, 'a value over a sixteenth of the weight budget is not kept');
  keep('b', 100);
  t.equal(derived.get('repo', 'b')?.length, 100, 'one within it is');
  keep('b', 60);
  t.equal(derived.size, 1, 'kept again under the same key: replaced, not counted twice');
  for (const tag of ['c', 'd', 'e']) keep(tag, 100);
  t.equal(derived.size, 4, 'as many as the link cache holds entries');
  keep('b', 90);
  t.equal(derived.size, 4, 'replacing one at the bound keeps the others');
  cache.drop([link('zzz')]);
  t.equal(derived.get('repo', 'c'), undefined, 'any change empties it');

  await driver.close();
});

t.test('a weight budget clears what is kept once it would be exceeded', async (t) => {
  const root = await tempDir(t, 'berth-link-cache-weight-');
  const inner = new FilesystemDriver({ rootDirectory: root });
  const cache = new LinkCache({ ttlMs: 60_000, maxEntries: 1000 });
  const driver = new CachingDriver(inner, cache);
  const link = (tag: string) => paths.tagCurrentLink('repo', tag);
  const derived = new DerivedCache<Buffer>(cache, { weigh: (b) => b.length, maxWeight: 320 });
  for (const tag of ['a', 'b', 'c', 'd', 'e']) {
    await inner.putContent(link(tag), Buffer.from(tag));
    await driver.getContent(link(tag));
  }
  for (const tag of ['a', 'b', 'c', 'd']) derived.set('repo', tag, Buffer.alloc(20), derived.begin(), [link(tag)]);
  t.equal(derived.size, 4, '4 × 20 within 320');
  for (const tag of ['a', 'b', 'c', 'd']) derived.set('repo', tag, Buffer.alloc(20), derived.begin(), [link(tag)]);
  t.equal(derived.size, 4, 'kept again: the weight is not counted twice');
  derived.set('repo', 'e', Buffer.alloc(20), derived.begin(), [link('e')]);
  t.equal(derived.size, 5, '100 of 320');
  for (let i = 0; i < 12; i++) derived.set('other', String(i), Buffer.alloc(20), derived.begin(), [link('a')]);
  t.ok(derived.size < 17 && derived.size > 0, `past 320 what was kept is dropped and filling starts over (${derived.size} kept)`);
  t.ok(derived.size * 20 <= 320, 'never more than the budget');
  await driver.close();
});
