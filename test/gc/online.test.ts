import { randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { runGc, type GcResult } from '../../src/gc/collector.js';
import { fsck } from '../../src/gc/fsck.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { startBerth } from '../helpers/berth.js';
import { HttpError, randomLayer, RegistryClient, type PushedImage } from '../helpers/registry-client.js';

const GRACE_MS = 2000;
const PUSH_FOR_MS = 12_000;

t.test('gc running repeatedly while images are pushed continuously loses nothing', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  // gc gets its own driver on the same directory, as `berth gc` in another process would.
  const driver = new FilesystemDriver({ rootDirectory: berth.root });
  // Base layers every push picks from: reused (HEAD says present, or mounted from the other repository) while gc
  // may find them unreferenced, once the images that used them lost their tags and were collected.
  const pool = Array.from({ length: 6 }, () => randomLayer(4096));
  const pushed: Array<{ repo: string; tag: string; image: PushedImage; started: number; ended: number }> = [];
  const deletedAt = new Map<string, string>();
  let retries = 0;
  let stop = false;

  const pusher = async (repo: string, other: string) => {
    for (let i = 0; !stop; i++) {
      const first = randomInt(pool.length);
      const second = (first + 1 + randomInt(pool.length - 1)) % pool.length;
      const layers = [pool[first] as Buffer, pool[second] as Buffer, randomLayer(2048)];
      const tag = `t${i % 3}`;
      for (let attempt = 0; ; attempt++) {
        try {
          const started = Date.now();
          const image = await client.pushImage(repo, tag, layers, { from: other });
          pushed.push({ repo, tag, image, started, ended: Date.now() });
          break;
        } catch (err) {
          // Only when a manifest PUT comes after gc finally deleted a blob the client saw (HEAD) before gc set it
          // aside (a PUT in between puts the blob back): the registry refuses the manifest cleanly (no broken
          // image is ever stored) and a client pushing again uploads the blob. Counted, and rare.
          if (attempt < 3 && err instanceof HttpError && err.status === 400 && err.body.includes('MANIFEST_BLOB_UNKNOWN')) {
            retries++;
            continue;
          }
          throw err;
        }
      }
      await sleep(randomInt(30));
    }
  };

  const runs: GcResult[] = [];
  const collector = async () => {
    while (!stop) {
      const run = runs.length;
      const startedRun = Date.now();
      runs.push(
        await runGc(driver, {
          graceMs: GRACE_MS,
          deleteUntagged: runs.length % 2 === 1,
          onDeletion: (d) => deletedAt.set(d.digest ?? '', `run ${run} (started ${startedRun}) at ${Date.now()}`),
        }),
      );
    }
  };

  const pushers = Promise.all([pusher('one', 'two'), pusher('two', 'one')]);
  const gcLoop = collector();
  await sleep(PUSH_FOR_MS);
  stop = true;
  await pushers;
  await gcLoop;

  const sum = (k: 'blobsDeleted' | 'manifestsDeleted' | 'blobsRescued') => runs.reduce((n, r) => n + r[k], 0);
  t.comment(
    `${pushed.length} images pushed, ${runs.length} gc runs, ${sum('manifestsDeleted')} manifests and ` +
      `${sum('blobsDeleted')} blobs deleted, ${sum('blobsRescued')} rescued by the re-check, ${retries} push retries`,
  );
  t.ok(runs.length >= 3, 'gc ran repeatedly');
  t.ok(sum('manifestsDeleted') > 0 && sum('blobsDeleted') > 0, 'gc really deleted things while pushes ran');
  t.ok(pushed.length >= 20, 'pushes ran continuously');

  const check = async (label: string) => {
    const problems: string[] = [];
    for (const repo of ['one', 'two']) {
      for (const tag of ['t0', 't1', 't2']) problems.push(...(await client.pull(repo, tag)));
    }
    let kept = 0;
    for (const p of pushed) {
      const m = await client.getManifest(p.repo, p.image.manifest.digest);
      if (m.status === 200) {
        kept++;
        const found = await client.pull(p.repo, p.image.manifest.digest);
        if (found.length > 0) {
          const layers = p.image.layers.map((l) => `${l.digest}: deleted ${deletedAt.get(l.digest) ?? 'never'}`);
          t.comment(`${p.repo}@${p.image.manifest.digest} pushed ${p.started}..${p.ended}; ${layers.join('; ')}`);
        }
        problems.push(...found);
      } else {
        const current = await client.getManifest(p.repo, p.tag);
        if (current.digest === p.image.manifest.digest) problems.push(`${p.repo}:${p.tag} is tagged but gone`);
      }
    }
    t.same(problems, [], `${label}: every tag, and every pushed image still present (${kept}), pulls completely`);
    const report = await fsck(driver);
    t.same(report.problems, [], `${label}: fsck finds no missing blob, dangling link or corrupt blob`);
  };
  await check('right after the pushes');

  await sleep(GRACE_MS + 100);
  const last = await runGc(driver, { graceMs: GRACE_MS, deleteUntagged: true });
  t.ok(last.manifestsDeleted + last.blobsDeleted > 0, 'a final run collects what the overwritten tags left');
  await check('after a final --delete-untagged run');
});
