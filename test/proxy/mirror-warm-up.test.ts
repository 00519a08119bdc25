import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { startBerth } from '../helpers/berth.js';
import { runBerth } from '../helpers/berth-process.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';
import { accessLog, seedWarmUpOrigin } from './helpers.js';

/**
 * Issue 15, warm-up: `berth mirror pull` fetches images into the cache ahead of need (all platforms, or one), with
 * progress lines; afterwards a berth on the same storage serves them with the upstream stopped.
 */
t.test('berth mirror pull warms the cache', async (t) => {
  const { origin, multi, amd, arm } = await seedWarmUpOrigin(t, 'berth-warm');

  const root = await tempDir(t, 'berth-warm-root-');
  const dir = await tempDir(t, 'berth-warm-cfg-');
  const cfg = join(dir, 'config.yml');
  await writeFile(
    cfg,
    `version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${root}\nproxy:\n  remoteurl: ${origin.url}\n`,
  );

  await t.test("--platform: only that platform's blobs are fetched", async (t) => {
    const run = await runBerth(['mirror', 'pull', '-c', cfg, '--platform', 'linux/arm64', 'multi:1']);
    t.equal(run.code, 0, run.output);
    t.match(run.stdout, `multi:1: ${multi.digest}`, 'progress names the index');
    t.match(run.stdout, `manifest ${arm.manifest} (linux/arm64)`);
    t.match(run.stdout, `skipped ${amd.manifest} (linux/amd64)`);
    t.match(run.stdout, `blob ${arm.layers[0]}`);
    t.match(run.stdout, /mirror pull: 1 of 1 images, 2 manifests, 2 blobs/);
    const fetched = accessLog(origin).filter((e) => e.method === 'GET' && e.path.includes('/blobs/'));
    t.ok(
      fetched.some((e) => e.path.endsWith(arm.layers[0] as string)),
      'the arm64 layer was fetched',
    );
    t.notOk(
      fetched.some((e) => e.path.endsWith(amd.layers[0] as string)),
      'the amd64 layer was not',
    );
  });

  await t.test('all platforms, several images, one unknown: exit 1, the others still warmed', async (t) => {
    const run = await runBerth(['mirror', 'pull', '-c', cfg, 'docker.io/library/multi:1', `127.0.0.1:1/org/single:2`, 'library/nope:1']);
    t.equal(run.code, 1, run.output);
    t.match(run.stdout, `blob ${amd.layers[0]}`);
    t.match(run.stdout, /library\/nope:1: failed: /);
    t.match(run.stdout, /mirror pull: 2 of 3 images, .*; 1 failed/);
    const again = await runBerth(['mirror', 'pull', '-c', cfg, 'multi:1']);
    t.equal(again.code, 0);
    const mark = accessLog(origin).length;
    await runBerth(['mirror', 'pull', '-c', cfg, '--platform', 'linux/amd64', `library/multi@${multi.digest}`]);
    t.notOk(
      accessLog(origin)
        .slice(mark)
        .some((e) => e.method === 'GET' && e.path.includes('/blobs/')),
      'cached blobs cost no upstream GET',
    );
  });

  await t.test('usage mistakes exit 2', async (t) => {
    t.equal((await runBerth(['mirror', 'pull', '-c', cfg])).code, 2, 'no image');
    t.equal((await runBerth(['mirror', 'push', '-c', cfg, 'x'])).code, 2, 'unknown subcommand');
    t.equal((await runBerth(['mirror', 'pull', '-c', cfg, '--platform', 'linux', 'x'])).code, 2, 'bad platform');
  });

  await t.test('with the upstream stopped, berth on that storage serves the warmed images', async (t) => {
    await origin.stop();
    const berth = await startBerth(t, { storage: { filesystem: { rootdirectory: root } }, proxy: { remoteurl: origin.url, tagttl: '1h' } });
    const dest = await tempDir(t, 'berth-warm-dest-');
    await skopeo(['copy', '--all', '--src-tls-verify=false', dockerRef(berth.url, 'library/multi', '1'), `oci:${dest}:multi`]);
    await skopeo(['copy', '--src-tls-verify=false', dockerRef(berth.url, 'org/single', '2'), `oci:${dest}:single`]);
    t.pass('both images pulled from the cache alone');
  });
});
