import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { spawnBerth } from '../helpers/berth-process.js';
import { layoutTagDigest, makeImageLayout } from '../helpers/oci-layout.js';
import { tempDir } from '../helpers/ports.js';
import { s3RegistryEnv, startS3Server } from '../helpers/s3-server.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';

/**
 * registry:2's env-only setups (helm charts, compose files): the config file says filesystem, the environment says
 * `REGISTRY_STORAGE=s3` plus `REGISTRY_STORAGE_S3_*`, and the data must land in the bucket. A real push with skopeo
 * against the strict S3 test server.
 */

t.test('REGISTRY_STORAGE=s3 with REGISTRY_STORAGE_S3_*: skopeo pushes into the bucket and pulls back', async (t) => {
  const s3 = await startS3Server(t);
  const dir = await tempDir(t, 'berth-registry-env-');
  const fsRoot = join(dir, 'fs-root');
  const config = join(dir, 'config.yml');
  // What the docker-registry helm chart mounts: a filesystem default and registry:2 options berth warns about.
  await writeFile(
    config,
    `version: 0.1\nlog:\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${fsRoot}\n  cache:\n    blobdescriptor: inmemory\n  delete:\n    enabled: true\nhttp:\n  secret: helm-generated\n`,
  );
  const berth = await spawnBerth(t, {
    BERTH_CONFIG: config,
    REGISTRY_STORAGE: 's3',
    ...s3RegistryEnv(s3),
    REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED: 'false',
  });
  t.match(berth.output(), /storage: s3 bucket /, 'the startup line names the bucket');
  t.match(berth.output(), /storage\.cache: accepted for registry:2 compatibility/, 'the warnings were shown at start');

  const layout = join(dir, 'layout');
  const image = await makeImageLayout(layout, { layers: [300_000, 7_000], tag: 'v1' });
  await skopeo(['copy', '--preserve-digests', `oci:${layout}:v1`, dockerRef(berth.url, 'helm/app', 'v1'), '--dest-tls-verify=false']);

  const keys = s3.keys();
  for (const digest of image.blobs) {
    const hex = digest.slice('sha256:'.length);
    t.ok(
      keys.some((k) => k.endsWith(`/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`)),
      `blob ${digest.slice(0, 19)} is in the bucket`,
    );
  }
  t.ok(
    keys.some((k) => k.includes('/repositories/helm/app/_manifests/tags/v1/current/link')),
    'the tag is in the bucket',
  );
  t.same(await readdir(fsRoot).catch(() => []), [], 'nothing was written to the filesystem root of the file');

  const back = join(dir, 'back');
  await skopeo(['copy', '--preserve-digests', dockerRef(berth.url, 'helm/app', 'v1'), `oci:${back}:v1`, '--src-tls-verify=false']);
  t.equal(await layoutTagDigest(back, 'v1'), image.digest, 'pulled back with the same digest');
  await skopeo(['delete', dockerRef(berth.url, 'helm/app', image.digest), '--tls-verify=false']);
  t.equal((await fetch(`${berth.url}/v2/helm/app/manifests/${image.digest}`)).status, 404, 'storage.delete from the file still applies');
});
