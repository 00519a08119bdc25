import { mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import t from 'tap';
import { fsck } from '../../src/gc/fsck.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { purgeUploads } from '../../src/uploads/upload-purger.js';
import { startBerth } from '../helpers/berth.js';
import { sha256 } from '../helpers/digest.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';
import { blobFile } from './tree.js';

t.test('fsck finds a blob whose bytes were altered on disk; --repair quarantines it', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  const driver = new FilesystemDriver({ rootDirectory: berth.root });
  const layers = [randomLayer(5000), randomLayer(6000)];
  const img = await client.pushImage('app', 'v1', layers);
  const victim = img.layers[0]?.digest ?? '';

  const clean = await fsck(driver);
  t.same(clean.problems, [], 'a fresh registry is clean');
  t.equal(clean.blobsChecked, 4, 'manifest, config and two layers re-hashed');
  t.equal(clean.bytesHashed, img.manifest.size + img.config.size + 11000);

  // Flip one byte in place (same size, same mtime class of damage a disk or a bad copy does).
  const file = blobFile(berth.root, victim);
  const bytes = await readFile(file);
  bytes[100] = (bytes[100] ?? 0) ^ 0xff;
  await writeFile(file, bytes);
  const served = await client.getBlobDigest('app', victim);
  t.not(served, victim, 'before repair the registry serves bytes that do not match their digest');

  const found = await fsck(driver);
  t.same(
    found.problems.map((p) => ({ kind: p.kind, digest: p.digest, actual: p.actual, quarantined: p.quarantined })),
    [{ kind: 'corrupt-blob', digest: victim, actual: sha256(bytes), quarantined: undefined }],
    'exactly the altered blob is reported, with the digest of what is stored',
  );
  t.equal(found.quarantined, 0, 'without --repair nothing moves');
  t.ok((await stat(file)).isFile());

  const repaired = await fsck(driver, { repair: true });
  t.equal(repaired.quarantined, 1);
  t.equal(repaired.problems[0]?.quarantined, true);
  t.same(
    repaired.problems.slice(1).map((p) => `${p.kind} ${p.repository} ${p.digest} ${p.removed === true}`),
    [`dangling-link app ${victim} true`, `manifest-missing-blob app ${victim} false`],
    'the layer link the quarantine leaves dangling is removed in the same run; the manifest is reported',
  );
  const quarantined = join(berth.root, 'docker/registry/v2/quarantine/sha256', victim.slice(7), 'data');
  t.same(await readFile(quarantined), bytes, 'the bad bytes are kept in quarantine for inspection');
  await t.rejects(stat(file), 'and are gone from the blob store');
  t.equal(await client.getBlobDigest('app', victim), 404, 'the registry now answers 404 instead of bad bytes');

  const after = await fsck(driver);
  t.same(
    after.problems.map((p) => `${p.kind} ${p.repository} ${p.digest}`).sort(),
    [`manifest-missing-blob app ${victim}`],
    'now: the manifest references a missing blob (a re-push heals it); nothing is corrupt, no link dangles',
  );

  // Pushing the image again heals the registry: the client sees the blob missing and uploads it.
  await client.pushImage('app', 'v1', layers);
  t.same((await fsck(driver)).problems, [], 'after a re-push fsck is clean');
  t.same(await client.pull('app', img.manifest.digest), [], 'and the original image pulls completely');
});

t.test('fsck --repair of a corrupt manifest removes the revision and the tag that led to it: a second run is clean', async (t) => {
  // fsck/gc run here beside the server on a driver of their own, with no Redis to announce their changes: the
  // setup config.example.yaml names for `berth.linkcache.ttl: 0` (without it the server sees them within the ttl).
  const berth = await startBerth(t, { berth: { linkcache: { ttl: '0s' } } });
  const client = new RegistryClient(berth.url);
  const driver = new FilesystemDriver({ rootDirectory: berth.root });
  const img = await client.pushImage('app', 'v1', [randomLayer(3000)]);
  const file = blobFile(berth.root, img.manifest.digest);
  const bytes = await readFile(file);
  bytes[10] = (bytes[10] ?? 0) ^ 0xff;
  await writeFile(file, bytes);

  const repaired = await fsck(driver, { repair: true });
  t.same(
    repaired.problems.map((p) => `${p.kind} ${p.digest} ${p.quarantined === true || p.removed === true}`).sort(),
    [`corrupt-blob ${img.manifest.digest} true`, `dangling-link ${img.manifest.digest} true`, `dangling-link ${img.manifest.digest} true`],
    'the manifest is quarantined, its revision link and the tag pointing at it removed',
  );
  t.same((await fsck(driver)).problems, [], 'a second run finds nothing');
  t.equal(await client.getBlobDigest('app', img.layers[0]?.digest ?? ''), img.layers[0]?.digest, 'the layer is still served');
  t.equal((await fetch(`${berth.url}/v2/app/manifests/v1`)).status, 404, 'the tag is gone instead of leading to bad bytes');
  await client.pushImage('app', 'v1', [randomLayer(3000)]);
  t.same((await fsck(driver)).problems, [], 'and the tag can be pushed again');
});

t.test(
  'what a kill -9 during writes leaves (a tag without current, temporary files) is reported, and removed by --repair and by upload purging',
  async (t) => {
    // Issue 11, item 6: "kill -9 during a tag PUT can leave a tag without its current link, which fsck reports on every
    // run and fsck --repair cannot fix; temporary files (*.tmp-*) left by interrupted writes ... are never removed."
    const berth = await startBerth(t);
    const client = new RegistryClient(berth.url);
    const driver = new FilesystemDriver({ rootDirectory: berth.root });
    const img = await client.pushImage('app', 'v1', [randomLayer(3000)]);
    const v2 = join(berth.root, 'docker/registry/v2');
    const hex = img.manifest.digest.slice(7);
    // A first PUT of tag v2 killed after its index link and before its current link.
    const tagIndex = join(v2, 'repositories/app/_manifests/tags/v2/index/sha256', hex);
    await mkdir(tagIndex, { recursive: true });
    await writeFile(join(tagIndex, 'link'), img.manifest.digest);
    // Temporary files of writes killed before their rename, as the filesystem driver names them: one under blobs/,
    // one of a tag's current link; both old. A fresh one belongs to a write in progress and stays.
    const old = new Date(Date.now() - 10 * 60 * 1000);
    const leftovers = [
      join(v2, 'blobs/sha256/aa', 'a'.repeat(64), 'data.tmp-0123456789ab~'),
      join(v2, 'repositories/app/_manifests/tags/v1/current/link.tmp-ba9876543210~'),
    ];
    for (const f of leftovers) {
      await mkdir(dirname(f), { recursive: true });
      await writeFile(f, 'partial');
      await utimes(f, old, old);
    }
    const fresh = join(v2, 'repositories/app/_manifests/tags/v1/current/link.tmp-00000000000f~');
    await writeFile(fresh, 'in progress');

    t.same((await client.request('GET', '/v2/app/tags/list')).body.toString(), '{"name":"app","tags":["v1"]}', 'the half-written tag is not listed');
    const found = await fsck(driver);
    t.same(
      found.problems.map((p) => `${p.kind} ${p.path ?? ''} ${p.removed === true}`).sort(),
      [
        'interrupted-write /docker/registry/v2/blobs/sha256/aa/' + 'a'.repeat(64) + '/data.tmp-0123456789ab~ false',
        'interrupted-write /docker/registry/v2/repositories/app/_manifests/tags/v1/current/link.tmp-ba9876543210~ false',
        'invalid-link /docker/registry/v2/repositories/app/_manifests/tags/v2/current/link false',
      ],
      'fsck reports the tag without current and the two stale temporary files, and removes nothing',
    );
    for (const f of leftovers) t.ok((await stat(f)).isFile());

    const repaired = await fsck(driver, { repair: true });
    t.same(
      repaired.problems.map((p) => p.removed),
      [true, true, true],
      '--repair removes all three',
    );
    for (const f of leftovers) await t.rejects(stat(f), `${f} is gone`);
    await t.rejects(stat(join(v2, 'repositories/app/_manifests/tags/v2')), 'the tag folder without current is gone');
    t.ok((await stat(fresh)).isFile(), 'a temporary file of a write that may be in progress stays');
    t.same((await fsck(driver)).problems, [], 'a second fsck is clean');
    t.equal((await client.getManifest('app', 'v1')).digest, img.manifest.digest, 'the tag v1 is untouched');

    // Upload purging removes stale temporary files too (the server runs it on its schedule).
    const again = join(v2, 'blobs/sha256/bb', 'b'.repeat(64), 'data.tmp-0123456789ac~');
    await mkdir(dirname(again), { recursive: true });
    await writeFile(again, 'partial');
    await utimes(again, old, old);
    t.equal(await purgeUploads(driver, undefined, { ageMs: 60_000, dryRun: true }), 0);
    t.ok((await stat(again)).isFile(), 'a dry run keeps it');
    await purgeUploads(driver, undefined, { ageMs: 60_000, dryRun: false });
    await t.rejects(stat(again), 'upload purging removed the stale temporary file');
    t.ok((await stat(fresh)).isFile(), 'and kept the fresh one');
  },
);
