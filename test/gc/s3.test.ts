import t from 'tap';
import type { RawSection } from '../../src/config/fields.js';
import { runGc } from '../../src/gc/collector.js';
import { fsck } from '../../src/gc/fsck.js';
import { diskUsage } from '../../src/gc/usage.js';
import { createS3Driver } from '../../src/storage/drivers/s3.js';
import { startBerth } from '../helpers/berth.js';
import { startS3Server } from '../helpers/s3-server.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';

// This machine sets AWS_CA_BUNDLE: the SDK must see only what the test passes.
for (const k of Object.keys(process.env)) if (k.startsWith('AWS_') && k !== 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED') delete process.env[k];

t.test('gc, du and fsck work through the S3 driver', async (t) => {
  const server = await startS3Server(t);
  const s3: RawSection = {
    bucket: server.bucket,
    region: server.region,
    regionendpoint: server.endpoint,
    forcepathstyle: true,
    accesskey: server.accessKey,
    secretkey: server.secretKey,
  };
  const berth = await startBerth(t, { storage: { s3: { ...s3 }, redirect: { disable: true } } });
  const client = new RegistryClient(berth.url);
  const shared = randomLayer(2048);
  const a = await client.pushImage('app', 'a', [shared, randomLayer(3000)]);
  const b = await client.pushImage('app', 'b', [shared, randomLayer(4000)]);
  await client.deleteManifest('app', 'a');

  const driver = createS3Driver({ ...s3 }, () => {});
  t.teardown(() => driver.close());
  const usage = await diskUsage(driver, { graceMs: 0 });
  t.equal(usage.reclaimable.deleteUntagged.bytes, a.manifest.size + a.config.size + 3000, 'du predicts what gc frees');
  const keysBefore = server.keys();
  const dry = await runGc(driver, { dryRun: true, deleteUntagged: true, graceMs: 0 });
  t.same(server.keys(), keysBefore, 'the dry run changed nothing in the bucket');
  const real = await runGc(driver, { deleteUntagged: true, graceMs: 0 });
  t.same(real.deletions, dry.deletions, 'the real run deleted what the dry run reported');
  t.same(
    real.deletions
      .filter((d) => d.kind === 'blob')
      .map((d) => d.digest)
      .sort(),
    [a.manifest.digest, a.config.digest, a.layers[1]?.digest].sort(),
  );
  t.same(await client.pull('app', 'b'), [], 'b pulls completely');
  t.notOk(
    server.keys().some((k) => k.includes('gc-pending')),
    'nothing left pending',
  );
  const check = await fsck(driver);
  t.same(check.problems, [], 'fsck is clean');
  t.equal(check.blobsChecked, 4, 'the four blobs of b re-hashed');
  t.equal(check.bytesHashed, b.manifest.size + b.config.size + 2048 + 4000);
});
