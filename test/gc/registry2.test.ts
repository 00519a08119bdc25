import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { runGc } from '../../src/gc/collector.js';
import { fsck } from '../../src/gc/fsck.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { startBerth } from '../helpers/berth.js';
import { startDockerRegistry } from '../helpers/docker-registry.js';
import { tempDir } from '../helpers/ports.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';

/** `docker-registry garbage-collect --dry-run`: the blobs Distribution's own (offline) gc would delete. */
function distributionGcDryRun(config: string): Promise<string[]> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AWS_') && !k.startsWith('REGISTRY_')));
  return new Promise((resolve, reject) => {
    execFile('/usr/bin/docker-registry', ['garbage-collect', '--dry-run', config], { env }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${err.message}\n${stderr}`));
      resolve([...`${stdout}\n${stderr}`.matchAll(/blob eligible for deletion: (sha256:[0-9a-f]{64})/g)].map((m) => m[1] as string).sort());
    });
  });
}

t.test('gc cleans a directory registry:2 wrote, agreeing with registry:2 on what is garbage', async (t) => {
  const root = await tempDir(t, 'berth-gc-registry2-');
  const registry = await startDockerRegistry(t, { rootDirectory: root });
  const client = new RegistryClient(registry.url);
  const shared = randomLayer(3000);
  const a = await client.pushImage('library/app', 'a', [shared, randomLayer(3100)]);
  await client.pushImage('library/app', 'b', [shared, randomLayer(3200)]);
  const c = await client.pushImage('tools/x', 'c', [randomLayer(3300)]);
  await client.deleteManifest('library/app', a.manifest.digest); // registry:2 removes the revision and its tags
  await client.deleteManifest('tools/x', c.manifest.digest);
  await registry.stop();

  const configDir = await tempDir(t, 'berth-gc-registry2-config-');
  const cfg = join(configDir, 'config.yml');
  await writeFile(cfg, `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${root}\n`);
  const theirs = await distributionGcDryRun(cfg);

  const driver = new FilesystemDriver({ rootDirectory: root });
  const dry = await runGc(driver, { dryRun: true, graceMs: 0 });
  const ours = dry.deletions
    .filter((d) => d.kind === 'blob')
    .map((d) => d.digest)
    .sort();
  t.same(ours, [a.manifest.digest, a.config.digest, a.layers[1]?.digest, c.manifest.digest, c.config.digest, c.layers[0]?.digest].sort());
  t.same(ours, theirs, 'the same blobs registry:2 garbage-collect finds eligible');

  const real = await runGc(driver, { graceMs: 0 });
  t.same(real.deletions.map((d) => d.digest).sort(), ours, 'the real run deletes them');
  t.same((await fsck(driver)).problems, [], 'what is left is consistent');

  // registry:2 serves what is left...
  const again = await startDockerRegistry(t, { rootDirectory: root });
  t.same(await new RegistryClient(again.url).pull('library/app', 'b'), [], 'registry:2 pulls b completely after berth gc');
  await again.stop();
  // ...and so does berth.
  const berth = await startBerth(t, { storage: { filesystem: { rootdirectory: root } } });
  t.same(await new RegistryClient(berth.url).pull('library/app', 'b'), [], 'berth pulls b completely');
  t.equal((await new RegistryClient(berth.url).getManifest('library/app', 'a')).status, 404);
});
