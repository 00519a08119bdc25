import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Histogram, Registry } from 'prom-client';
import t from 'tap';
import { withStorageTiming } from '../../src/compose.js';
import { isNotFound } from '../../src/storage/driver.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { createS3Driver } from '../../src/storage/drivers/s3.js';
import { s3StorageSection, startS3Server } from '../helpers/s3-server.js';
import { goFloat, registry2Text } from '../../src/http/registry2-metrics.js';

// registry:2's series written as its Go Prometheus client writes them, and the storage timing behind
// registry_storage_action_seconds.

t.test('numbers as Go writes them (strconv g, shortest)', async (t) => {
  const rows: [number, string][] = [
    [0.005, '0.005'],
    [1, '1'],
    [0, '0'],
    [2.5, '2.5'],
    [524288, '524288'],
    [1048576, '1.048576e+06'],
    [2147483648, '2.147483648e+09'],
    [1000000, '1e+06'],
    [0.0001, '0.0001'],
    [0.00001234, '1.234e-05'],
    [0.11944072800000002, '0.11944072800000002'],
    [-3e21, '-3e+21'],
    [Infinity, '+Inf'],
    [-Infinity, '-Inf'],
    [NaN, 'NaN'],
  ];
  for (const [n, want] of rows) t.equal(goFloat(n), want, `${n}`);
});

t.test('registry_* samples rewritten; other lines untouched', async (t) => {
  const text = [
    '# HELP registry_x_bytes sizes',
    'registry_x_bytes_bucket{le="1048576",method="get",handler="blob"} 3',
    'registry_x_bytes_bucket{le="+Inf",method="get",handler="blob"} 3',
    'registry_x_bytes_sum{method="get",handler="blob"} 3000000',
    'registry_y_total 2000000',
    'registry_z{handler="a\\"b,c",code="200"} 1',
    'berth_x_bucket{le="1048576"} 3000000',
    '',
  ].join('\n');
  t.equal(
    registry2Text(text),
    [
      '# HELP registry_x_bytes sizes',
      'registry_x_bytes_bucket{handler="blob",method="get",le="1.048576e+06"} 3',
      'registry_x_bytes_bucket{handler="blob",method="get",le="+Inf"} 3',
      'registry_x_bytes_sum{handler="blob",method="get"} 3e+06',
      'registry_y_total 2e+06',
      'registry_z{code="200",handler="a\\"b,c"} 1',
      'berth_x_bucket{le="1048576"} 3000000',
      '',
    ].join('\n'),
  );
});

t.test('the timing driver: one observation per call, failures included, labelled as registry:2 does', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'berth-timed-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const registry = new Registry();
  const histogram = new Histogram({
    name: 'registry_storage_action_seconds',
    help: 'h',
    labelNames: ['action', 'driver'] as const,
    registers: [registry],
  });
  const inner = new FilesystemDriver({ rootDirectory: root });
  const driver = withStorageTiming(inner, histogram);
  t.equal(driver.name, 'filesystem');
  t.equal(typeof driver.removeStaleTemporaryFiles, 'function', "the driver's optional maintenance calls pass through");

  await driver.putContent('/a/b', Buffer.from('hello'));
  t.equal((await driver.getContent('/a/b')).toString(), 'hello');
  await driver.stat('/a/b');
  await driver.stat('/a/missing').then(
    () => t.fail('stat of a missing file'),
    (err: unknown) => t.ok(isNotFound(err), 'errors pass through unchanged'),
  );
  const w = await driver.writer('/a/c');
  await w.write(Buffer.from('x'.repeat(100)));
  await w.commit();
  const r = await driver.reader('/a/c');
  let n = 0;
  for await (const chunk of r) n += (chunk as Buffer).length;
  t.equal(n, 100, 'streams pass through');
  t.same(await driver.list('/a'), ['/a/b', '/a/c']);
  await driver.move('/a/c', '/a/d');
  t.equal(await driver.redirectURL('/a/d', { method: 'GET', expiresInSeconds: 60 }), null);
  await driver.delete('/a');

  const counts = new Map<string, number>();
  for (const v of (await histogram.get()).values) {
    if (v.metricName === 'registry_storage_action_seconds_count') counts.set(`${v.labels.action}/${v.labels.driver}`, v.value);
  }
  t.same(Object.fromEntries([...counts].sort()), {
    'Delete/filesystem': 1,
    'GetContent/filesystem': 1,
    'List/filesystem': 1,
    'Move/filesystem': 1,
    'PutContent/filesystem': 1,
    'Reader/filesystem': 1,
    'Stat/filesystem': 2,
    'URLFor/filesystem': 1,
    'Writer/filesystem': 1,
  });
  await driver.close();
});

t.test("the S3 driver is labelled s3aws, registry:2's name for its S3 driver", async (t) => {
  const server = await startS3Server(t);
  const inner = createS3Driver({ ...s3StorageSection(server), chunksize: 5 * 1024 * 1024 }, () => undefined);
  const histogram = new Histogram({
    name: 'registry_storage_action_seconds',
    help: 'h',
    labelNames: ['action', 'driver'] as const,
    registers: [new Registry()],
  });
  const driver = withStorageTiming(inner, histogram);
  t.teardown(() => driver.close());
  await driver.putContent('/a/b', Buffer.from('hello'));
  t.equal((await driver.stat('/a/b')).size, 5);
  const counts = (await histogram.get()).values
    .filter((v) => v.metricName === 'registry_storage_action_seconds_count')
    .map((v) => `${v.labels.action}/${v.labels.driver}=${v.value}`)
    .sort();
  t.same(counts, ['PutContent/s3aws=1', 'Stat/s3aws=1']);
});
