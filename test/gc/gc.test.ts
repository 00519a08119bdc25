import { mkdir, rename, stat, utimes, writeFile, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { runGc, type GcDeletion } from '../../src/gc/collector.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { startBerth } from '../helpers/berth.js';
import { sha256 as sha256Of } from '../helpers/digest.js';
import { randomLayer, RegistryClient, type PushedImage } from '../helpers/registry-client.js';
import { blobFile, layerLinkFile, snapshot, storedBlobs } from './tree.js';

const HOURS = 3_600_000;

function blobsOf(img: PushedImage): string[] {
  return [img.manifest.digest, img.config.digest, ...img.layers.map((l) => l.digest)];
}

function sortDeletions(d: GcDeletion[]): GcDeletion[] {
  return [...d].sort((a, b) => `${a.kind}${a.repository}${a.digest}`.localeCompare(`${b.kind}${b.repository}${b.digest}`));
}

/** Sets the modification time of a file (and its directory) `ms` into the past. */
async function age(file: string, ms: number): Promise<void> {
  const when = new Date(Date.now() - ms);
  await utimes(file, when, when);
}

t.test('dry run reports exactly what the real run deletes; a deleted tag frees only its unshared layers', async (t) => {
  // fsck/gc run here beside the server on a driver of their own, with no Redis to announce their changes: the
  // setup config.example.yaml names for `berth.linkcache.ttl: 0` (without it the server sees them within the ttl).
  const berth = await startBerth(t, { berth: { linkcache: { ttl: '0s' } } });
  const client = new RegistryClient(berth.url);
  const shared = randomLayer(2048);
  const a = await client.pushImage('app', 'a', [shared, randomLayer(3000)]);
  const b = await client.pushImage('app', 'b', [shared, randomLayer(4000)]);
  // Another repository uses the shared layer too (mounted from app).
  const c = await client.pushImage('other', 'c', [shared], { from: 'app' });
  await client.deleteManifest('app', 'a'); // untag

  const driver = new FilesystemDriver({ rootDirectory: berth.root });
  // Without --delete-untagged an untagged manifest is still a manifest: nothing to collect.
  const plain = await runGc(driver, { graceMs: 0 });
  t.same(plain.deletions, [], 'plain gc keeps untagged manifests and their blobs');

  const before = await snapshot(berth.root);
  const dry = await runGc(driver, { dryRun: true, deleteUntagged: true, graceMs: 0 });
  t.same(await snapshot(berth.root), before, 'the dry run changed nothing on disk');
  const expectedBlobs = [a.manifest.digest, a.config.digest, a.layers[1]?.digest].sort();
  t.same(
    dry.deletions
      .filter((d) => d.kind === 'blob')
      .map((d) => d.digest)
      .sort(),
    expectedBlobs,
    'exactly the manifest, config and unshared layer of the untagged image',
  );
  t.same(
    dry.deletions.filter((d) => d.kind === 'manifest').map((d) => `${d.repository}@${d.digest}`),
    [`app@${a.manifest.digest}`],
  );
  const sizes = [a.manifest.size, a.config.size, 3000].reduce((x, y) => x + y, 0);
  t.equal(dry.blobBytesReclaimed, sizes, 'dry run bytes = sizes of the three blobs');

  const real = await runGc(driver, { deleteUntagged: true, graceMs: 0 });
  t.same(sortDeletions(real.deletions), sortDeletions(dry.deletions), 'the real run deleted exactly what the dry run reported');
  t.equal(real.bytesReclaimed, sizes);
  t.equal(real.manifestsDeleted, 1);
  t.equal(real.blobsDeleted, 3);

  const remaining = await storedBlobs(berth.root);
  t.same([...remaining].sort(), [...new Set([...blobsOf(b), ...blobsOf(c)])].sort(), 'exactly the blobs of the tagged images remain');
  t.same(await client.pull('app', 'b'), [], 'b pulls completely (shared layer survived)');
  t.same(await client.pull('other', 'c'), [], 'c pulls completely');
  t.equal((await client.getManifest('app', a.manifest.digest)).status, 404, 'the untagged manifest is gone');
  t.equal(await client.getBlobDigest('app', a.layers[1]?.digest ?? ''), 404, 'its unique layer is gone');
  await t.rejects(stat(layerLinkFile(berth.root, 'app', a.layers[1]?.digest ?? '')), 'the link to the deleted layer is gone');
  t.ok((await stat(layerLinkFile(berth.root, 'app', a.layers[0]?.digest ?? ''))).isFile(), 'the shared layer link stays');

  const again = await runGc(driver, { deleteUntagged: true, graceMs: 0 });
  t.same(again.deletions, [], 'a second run finds nothing');
});

t.test('without --delete-untagged, a manifest deleted by digest frees its unshared blobs', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  const shared = randomLayer(1000);
  const keep = await client.pushImage('app', 'keep', [shared]);
  const gone = await client.pushImage('app', 'gone', [shared, randomLayer(1500)]);
  await client.deleteManifest('app', gone.manifest.digest);
  const r = await runGc(new FilesystemDriver({ rootDirectory: berth.root }), { graceMs: 0 });
  t.same(r.deletions.map((d) => d.digest).sort(), [gone.manifest.digest, gone.config.digest, gone.layers[1]?.digest].sort());
  t.same(await client.pull('app', 'keep'), []);
  t.same([...(await storedBlobs(berth.root))].sort(), blobsOf(keep).sort());
});

t.test('multi-arch index children survive --delete-untagged', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  const amd = await client.pushImage('multi', null, [randomLayer(1200)], { platform: { os: 'linux', architecture: 'amd64' } });
  const arm = await client.pushImage('multi', null, [randomLayer(1300)], { platform: { os: 'linux', architecture: 'arm64' } });
  const index = await client.pushIndex('multi', 'latest', [
    { ...amd.manifest, platform: { os: 'linux', architecture: 'amd64' } },
    { ...arm.manifest, platform: { os: 'linux', architecture: 'arm64' } },
  ]);
  const stray = await client.pushImage('multi', null, [randomLayer(1400)]);
  const r = await runGc(new FilesystemDriver({ rootDirectory: berth.root }), { deleteUntagged: true, graceMs: 0 });
  t.same(
    r.deletions.filter((d) => d.kind === 'manifest').map((d) => d.digest),
    [stray.manifest.digest],
    'only the stray manifest',
  );
  t.same(
    r.deletions
      .filter((d) => d.kind === 'blob')
      .map((d) => d.digest)
      .sort(),
    blobsOf(stray).sort(),
  );
  t.same(await client.pull('multi', 'latest'), [], 'the index and both children pull completely');
  t.equal((await client.getManifest('multi', index.digest)).status, 200);
});

t.test('referrers of kept manifests survive --delete-untagged, recursively', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  const img = await client.pushImage('app', 'v1', [randomLayer(900)]);
  const sig = await client.pushReferrer('app', img.manifest, 'application/vnd.example.signature', randomLayer(100));
  const sigOfSig = await client.pushReferrer('app', sig.manifest, 'application/vnd.example.countersignature', randomLayer(110));
  const orphan = await client.pushImage('app', null, [randomLayer(950)]);
  const orphanSig = await client.pushReferrer('app', orphan.manifest, 'application/vnd.example.signature', randomLayer(120));

  const r = await runGc(new FilesystemDriver({ rootDirectory: berth.root }), { deleteUntagged: true, graceMs: 0 });
  t.same(
    r.deletions
      .filter((d) => d.kind === 'manifest')
      .map((d) => d.digest)
      .sort(),
    [orphan.manifest.digest, orphanSig.manifest.digest].sort(),
    'the untagged image and its referrer go',
  );
  t.same(
    r.deletions
      .filter((d) => d.kind === 'blob')
      .map((d) => d.digest)
      .sort(),
    [...blobsOf(orphan), orphanSig.manifest.digest, orphanSig.layers[0]?.digest].sort(),
    'their blobs go; the shared empty config stays',
  );
  t.same(await client.pull('app', sig.manifest.digest), [], 'the signature pulls');
  t.same(await client.pull('app', sigOfSig.manifest.digest), [], 'the signature of the signature pulls');
  const res = await fetch(`${berth.url}/v2/app/referrers/${img.manifest.digest}`);
  const listed = ((await res.json()) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest);
  t.same(listed, [sig.manifest.digest], 'the referrers API still lists the signature');
});

t.test('the grace period protects young blobs and young links', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  const driver = new FilesystemDriver({ rootDirectory: berth.root });
  const lone = await client.pushBlob('app', randomLayer(500));

  let r = await runGc(driver, { graceMs: 1 * HOURS, settleMs: 100 });
  t.same(r.deletions, [], 'a just uploaded unreferenced blob is kept');
  t.equal(r.blobsProtected, 1);

  await age(blobFile(berth.root, lone.digest), 2 * HOURS);
  r = await runGc(driver, { graceMs: 1 * HOURS, settleMs: 100 });
  t.same(r.deletions, [], 'old data but a young _layers link (a recent upload, mount or completion): kept');

  await age(layerLinkFile(berth.root, 'app', lone.digest), 2 * HOURS);
  r = await runGc(driver, { graceMs: 1 * HOURS, settleMs: 100 });
  t.same(
    r.deletions.map((d) => d.digest),
    [lone.digest],
    'once data and link are older than the grace it goes',
  );
  t.same(r.deletions[0]?.links, ['app']);
  t.equal(await client.getBlobDigest('app', lone.digest), 404);

  // In real time: a 1 s grace keeps a fresh blob, and lets it go a second later.
  const fresh = await client.pushBlob('app', randomLayer(600));
  r = await runGc(driver, { graceMs: 1000, settleMs: 100 });
  t.same(r.deletions, [], 'younger than 1 s: kept');
  await sleep(1100);
  r = await runGc(driver, { graceMs: 1000, settleMs: 100 });
  t.same(
    r.deletions.map((d) => d.digest),
    [fresh.digest],
    'older than 1 s and unreferenced: deleted',
  );
});

t.test('gc removes abandoned upload data, never an active upload', async (t) => {
  const berth = await startBerth(t);
  const driver = new FilesystemDriver({ rootDirectory: berth.root });
  const startUpload = async () => {
    const res = await fetch(`${berth.url}/v2/app/blobs/uploads/`, { method: 'POST' });
    t.equal(res.status, 202);
    const location = new URL(res.headers.get('location') ?? '', berth.url);
    const patch = await fetch(location, { method: 'PATCH', body: randomLayer(700), headers: { 'Content-Type': 'application/octet-stream' } });
    t.equal(patch.status, 202);
    return location.pathname.split('/').pop() ?? '';
  };
  const abandoned = await startUpload();
  const active = await startUpload();
  const dir = join(berth.root, 'docker/registry/v2/repositories/app/_uploads', abandoned);
  await writeFile(join(dir, 'startedat'), new Date(Date.now() - 48 * HOURS).toISOString());
  for (const f of ['startedat', 'data']) await age(join(dir, f), 48 * HOURS);
  await age(dir, 48 * HOURS);

  const r = await runGc(driver, { graceMs: 0, uploadAgeMs: 24 * HOURS });
  t.same(r.deletions, [{ kind: 'upload', repository: 'app', upload: abandoned, bytes: 700 }]);
  t.equal(r.uploadBytesReclaimed, 700);
  await t.rejects(stat(dir), 'abandoned upload data removed');
  t.ok((await stat(join(berth.root, 'docker/registry/v2/repositories/app/_uploads', active, 'data'))).isFile(), 'the active upload is untouched');
  const status = await fetch(`${berth.url}/v2/app/blobs/uploads/${active}`);
  t.equal(status.status, 204, 'and can continue');
});

t.test('an interrupted gc stops between deletions; a crashed run is undone by the next one', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  const driver = new FilesystemDriver({ rootDirectory: berth.root });
  const orphans = [
    await client.pushBlob('app', randomLayer(100)),
    await client.pushBlob('app', randomLayer(101)),
    await client.pushBlob('app', randomLayer(102)),
  ];
  const controller = new AbortController();
  const r = await runGc(driver, { graceMs: 0, batchSize: 1, signal: controller.signal, onDeletion: () => controller.abort() });
  t.equal(r.interrupted, true);
  t.equal(r.blobsDeleted, 1, 'stopped after the first deletion');
  const left = await storedBlobs(berth.root);
  t.equal(orphans.filter((o) => left.has(o.digest)).length, 2, 'the other two are intact');
  const pendingRoot = join(berth.root, 'docker/registry/v2/gc-pending');
  t.same(await readdir(pendingRoot).catch(() => []), [], 'nothing left pending');

  // A run killed after moving a blob to pending: the next run moves it back first (here a referenced layer).
  const img = await client.pushImage('app', 'v1', [randomLayer(300)]);
  const layer = img.layers[0]?.digest ?? '';
  const pending = join(pendingRoot, 'crashed-run/sha256', layer.slice(7));
  await mkdir(dirname(pending), { recursive: true });
  await rename(blobFile(berth.root, layer), pending);
  t.not(await client.getBlobDigest('app', layer), layer, 'the layer is unreadable while pending');
  await runGc(driver, { graceMs: 0 });
  t.same(await client.pull('app', 'v1'), [], 'restored: the image pulls completely');
});

t.test('the re-check keeps a pending blob that a manifest or a link started using during the run', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  const viaManifest = await client.pushImage('app', 'x', [randomLayer(700)]);
  const viaLink = await client.pushImage('app', 'y', [randomLayer(800)]);
  const dropped = await client.pushImage('app', 'z', [randomLayer(900)]);
  for (const img of [viaManifest, viaLink, dropped]) {
    await client.deleteManifest('app', img.manifest.digest);
    for (const d of [img.config.digest, ...img.layers.map((l) => l.digest)]) {
      await age(blobFile(berth.root, d), 2 * HOURS);
      await age(layerLinkFile(berth.root, 'app', d), 2 * HOURS);
    }
    await age(blobFile(berth.root, img.manifest.digest), 2 * HOURS);
  }
  const viaPut = await client.pushImage('app', 'w', [randomLayer(810)]);
  await client.deleteManifest('app', viaPut.manifest.digest);
  for (const d of [viaPut.manifest.digest, viaPut.config.digest, ...viaPut.layers.map((l) => l.digest)]) {
    await age(blobFile(berth.root, d), 2 * HOURS);
    if (d !== viaPut.manifest.digest) await age(layerLinkFile(berth.root, 'app', d), 2 * HOURS);
  }
  const layerC = viaPut.layers[0]?.digest ?? '';
  let putStatus = 0;
  const layerA = viaManifest.layers[0]?.digest ?? '';
  const layerB = viaLink.layers[0]?.digest ?? '';
  await client.pushImage('later', 'v1', [randomLayer(10)]);
  const kept = await client.pushImage('app', 'kept', [randomLayer(20)]);
  // A layer uploaded earlier whose manifest arrives after gc's scan, slowly enough that the manifest blob itself
  // is older than the grace period when gc looks at the blobs.
  const slow = await client.pushBlob('app', randomLayer(720));
  await age(blobFile(berth.root, slow.digest), 2 * HOURS);
  await age(layerLinkFile(berth.root, 'app', slow.digest), 2 * HOURS);
  const slowBody = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: kept.config,
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: slow.digest, size: slow.size }],
    }),
  );
  const slowDigest = sha256Of(slowBody);

  /** The real filesystem driver; right after gc sets a blob aside, a client acts as if it had been a moment ahead. */
  class RacingDriver extends FilesystemDriver {
    private listedBlobs = false;
    override async list(path: string): Promise<string[]> {
      if (path === '/docker/registry/v2/blobs' && !this.listedBlobs) {
        this.listedBlobs = true;
        const hex = slowDigest.slice(7);
        await this.putContent(`/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`, slowBody);
        await age(blobFile(berth.root, slowDigest), 2 * HOURS);
        await this.putContent(`/docker/registry/v2/repositories/app/_manifests/revisions/sha256/${hex}/link`, Buffer.from(slowDigest));
        await this.putContent(`/docker/registry/v2/repositories/app/_manifests/tags/slow/current/link`, Buffer.from(slowDigest));
      }
      return super.list(path);
    }

    override async move(source: string, dest: string): Promise<void> {
      await super.move(source, dest);
      if (!dest.includes('/gc-pending/')) return;
      if (dest.endsWith(layerA.slice(7))) {
        // A manifest push that checked its blobs just before the move now stores its manifest and tag
        // (what RegistryStore.putManifest writes after its check).
        const body = Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            config: kept.config,
            layers: [viaManifest.layers[0]],
          }),
        );
        const digest = sha256Of(body);
        const hex = digest.slice(7);
        await this.putContent(`/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`, body);
        await this.putContent(`/docker/registry/v2/repositories/app/_manifests/revisions/sha256/${hex}/link`, Buffer.from(digest));
        await this.putContent(`/docker/registry/v2/repositories/app/_manifests/tags/raced/current/link`, Buffer.from(digest));
      }
      if (dest.endsWith(layerC.slice(7))) {
        // A client that saw the layer (HEAD) just before the move now PUTs its manifest through the API.
        const res = await fetch(`${berth.url}/v2/app/manifests/via-put`, {
          method: 'PUT',
          headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
          body: JSON.stringify({
            schemaVersion: 2,
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            config: kept.config,
            layers: [viaPut.layers[0]],
          }),
        });
        putStatus = res.status;
      }
      if (dest.endsWith(layerB.slice(7))) {
        // A mount into another repository that passed its check just before the move writes its link now.
        await this.putContent(`/docker/registry/v2/repositories/later/_layers/sha256/${layerB.slice(7)}/link`, Buffer.from(layerB));
      }
    }
  }
  const r = await runGc(new RacingDriver({ rootDirectory: berth.root }), { graceMs: 1 * HOURS, settleMs: 200, deleteUntagged: true });
  t.same(
    r.deletions.filter((d) => d.kind === 'blob' && [layerA, layerB, slow.digest, slowDigest].includes(d.digest ?? '')),
    [],
    'none of the raced blobs is deleted',
  );
  t.equal(r.blobsRescued, 5, 'the raced layers, the late manifest and its layer were kept');
  t.equal(putStatus, 201, 'a manifest PUT referencing a pending layer succeeds: the registry puts the layer back');
  t.notOk(
    r.deletions.some((d) => d.digest === layerC),
    'and gc, finding its pending copy gone, keeps it',
  );
  t.same(await client.pull('app', 'via-put'), [], 'that manifest pulls completely');
  t.same(await client.pull('app', 'slow'), [], 'the manifest that arrived after the scan pulls completely');
  t.ok(
    r.deletions.some((d) => d.digest === dropped.layers[0]?.digest),
    'the untouched unreferenced layer was deleted',
  );
  t.equal(await client.getBlobDigest('app', layerA), layerA, 'the layer the raced manifest uses is readable');
  t.same(await client.pull('app', 'raced'), [], 'the raced manifest pulls completely');
  t.equal(await client.getBlobDigest('later', layerB), layerB, 'the freshly linked layer is readable in the new repository');
  t.same(await readdir(join(berth.root, 'docker/registry/v2/gc-pending')).catch(() => []), [], 'nothing left pending');
});

t.test('an index pushed while its child is being deleted as untagged gets the child back', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  const child = await client.pushImage('multi', null, [randomLayer(640)], { platform: { os: 'linux', architecture: 'arm64' } });
  const hex = child.manifest.digest.slice(7);
  for (const d of [child.manifest.digest, child.config.digest, ...child.layers.map((l) => l.digest)]) {
    await age(blobFile(berth.root, d), 2 * HOURS);
  }
  for (const d of [child.config.digest, ...child.layers.map((l) => l.digest)]) await age(layerLinkFile(berth.root, 'multi', d), 2 * HOURS);
  await age(join(berth.root, 'docker/registry/v2/repositories/multi/_manifests/revisions/sha256', hex, 'link'), 2 * HOURS);
  const indexBody = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ ...child.manifest, platform: { os: 'linux', architecture: 'arm64' } }],
    }),
  );
  const indexDigest = sha256Of(indexBody);

  /** Right after gc deletes the untagged child, an index push that checked its children a moment earlier lands. */
  class RacingDriver extends FilesystemDriver {
    override async delete(path: string): Promise<void> {
      await super.delete(path);
      if (path.endsWith(`/_manifests/revisions/sha256/${hex}`)) {
        const ih = indexDigest.slice(7);
        await this.putContent(`/docker/registry/v2/blobs/sha256/${ih.slice(0, 2)}/${ih}/data`, indexBody);
        await this.putContent(`/docker/registry/v2/repositories/multi/_manifests/revisions/sha256/${ih}/link`, Buffer.from(indexDigest));
        await this.putContent(`/docker/registry/v2/repositories/multi/_manifests/tags/latest/current/link`, Buffer.from(indexDigest));
      }
    }
  }
  const r = await runGc(new RacingDriver({ rootDirectory: berth.root }), { graceMs: 1 * HOURS, settleMs: 100, deleteUntagged: true });
  t.equal(r.manifestsRestored, 1, 'the child manifest was put back');
  t.equal(r.manifestsDeleted, 0);
  t.same(r.deletions, [], 'nothing is reported deleted');
  t.same(await client.pull('multi', 'latest'), [], 'the index and its child pull completely');
});

t.test('a storage error in the middle of a sweep puts pending blobs back', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  const orphan = await client.pushBlob('app', randomLayer(333));
  /** The real driver, except that deleting a pending blob fails as a flaky backend would. */
  class FailingDriver extends FilesystemDriver {
    override async delete(path: string): Promise<void> {
      if (path.includes('/gc-pending/') && path.endsWith(orphan.digest.slice(7))) throw new Error('backend went away');
      return super.delete(path);
    }
  }
  await t.rejects(runGc(new FailingDriver({ rootDirectory: berth.root }), { graceMs: 0 }), /backend went away/);
  t.equal(await client.getBlobDigest('app', orphan.digest), orphan.digest, 'the blob is back in place and readable');
  t.same(await readdir(join(berth.root, 'docker/registry/v2/gc-pending')).catch(() => []), [], 'nothing left pending');
});
