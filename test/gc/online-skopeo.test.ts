import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { runGc, type GcResult } from '../../src/gc/collector.js';
import { fsck } from '../../src/gc/fsck.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { startBerth } from '../helpers/berth.js';
import { makeImageLayout, type GeneratedLayout } from '../helpers/oci-layout.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';
import { RegistryClient } from '../helpers/registry-client.js';

const GRACE_MS = 2000;
const PUSH_FOR_MS = 12_000;
const MAX_PUSH_FOR_MS = 40_000;

t.test('skopeo pushes continuously while gc runs repeatedly; everything pulls afterwards', async (t) => {
  const berth = await startBerth(t);
  const driver = new FilesystemDriver({ rootDirectory: berth.root });
  const work = await tempDir(t, 'berth-gc-skopeo-');
  // Ten images pushed again and again, at a human pace, under one tag per repository: a push often re-sends an image whose manifest gc has
  // just deleted as untagged, so skopeo finds its blobs present (or mounts them) while gc considers them garbage.
  const layouts: Array<{ dir: string; layout: GeneratedLayout }> = [];
  for (let i = 0; i < 10; i++) {
    const dir = join(work, `image-${i}`);
    const layout = await makeImageLayout(
      dir,
      i === 9
        ? {
            tag: 'v1',
            layers: [2048],
            platforms: [
              { os: 'linux', architecture: 'amd64' },
              { os: 'linux', architecture: 'arm64' },
            ],
          }
        : { tag: 'v1', layers: [4096, 512 * (i + 1)] },
    );
    layouts.push({ dir, layout });
  }
  const tagged = new Map<string, string>(); // repo:tag -> digest pushed last
  let stop = false;
  let pushes = 0;
  let refused = 0;

  const pusher = async (repo: string) => {
    while (!stop) {
      const { dir, layout } = layouts[randomInt(layouts.length)] as { dir: string; layout: GeneratedLayout };
      const tag = 'latest';
      const copy = () => skopeo(['copy', '--all', '--preserve-digests', '--dest-tls-verify=false', `oci:${dir}:v1`, dockerRef(berth.url, repo, tag)]);
      try {
        await copy();
      } catch (err) {
        // The window collector.ts names: a manifest PUT later than the settle time after its client saw a blob that
        // gc then set aside and deleted is refused cleanly (MANIFEST_BLOB_UNKNOWN), and a retry uploads the blob.
        // Under a loaded machine skopeo can take that long; the retry must then succeed.
        if (!/manifest blob unknown/.test(String(err))) throw err;
        refused++;
        await copy();
      }
      tagged.set(`${repo}:${tag}`, layout.digest);
      pushes++;
      await sleep(300 + randomInt(700));
    }
  };
  const runs: GcResult[] = [];
  const collector = async () => {
    while (!stop) runs.push(await runGc(driver, { graceMs: GRACE_MS, deleteUntagged: runs.length % 2 === 1 }));
  };

  const sum = (k: 'blobsDeleted' | 'manifestsDeleted' | 'blobsRescued' | 'manifestsRestored') => runs.reduce((n, r) => n + r[k], 0);
  const pushing = Promise.all([pusher('alpha'), pusher('beta')]);
  const collecting = collector();
  await sleep(PUSH_FOR_MS);
  // Which blobs become garbage is random (an image's blobs are garbage once no tag names it, unless it is pushed again
  // first): on a fast machine 12 s once ended with manifests deleted but every blob rescued. Keep going (up to
  // MAX_PUSH_FOR_MS in all) until gc has deleted both, so the race the test is about has happened.
  for (let waited = PUSH_FOR_MS; waited < MAX_PUSH_FOR_MS && !(sum('manifestsDeleted') > 0 && sum('blobsDeleted') > 0); waited += 500) {
    await sleep(500);
  }
  stop = true;
  await pushing;
  await collecting;
  t.comment(
    `${pushes} skopeo pushes (${refused} refused once with MANIFEST_BLOB_UNKNOWN and pushed again), ${runs.length} gc runs: ` +
      `${sum('manifestsDeleted')} manifests and ${sum('blobsDeleted')} ` +
      `blobs deleted, ${sum('blobsRescued')} blobs rescued and ${sum('manifestsRestored')} manifests restored by the re-check`,
  );
  t.ok(runs.length >= 3 && pushes >= 10, 'both ran repeatedly');
  t.ok(sum('manifestsDeleted') > 0 && sum('blobsDeleted') > 0, 'gc deleted manifests and blobs while skopeo pushed');

  const client = new RegistryClient(berth.url);
  for (const [ref, digest] of tagged) {
    const [repo, tag] = ref.split(':') as [string, string];
    const m = await client.getManifest(repo, tag);
    t.equal(m.digest, digest, `${ref} still names the image pushed last`);
    const out = join(work, `pull-${repo}-${tag}`);
    // skopeo verifies every blob against its digest while copying.
    await skopeo(['copy', '--all', '--src-tls-verify=false', dockerRef(berth.url, repo, tag), `oci:${out}:x`]);
    t.same(await client.pull(repo, tag), [], `${ref} pulls completely`);
  }
  t.same((await fsck(driver)).problems, [], 'fsck finds nothing missing or dangling');
});
