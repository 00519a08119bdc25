import t from 'tap';
import { pino } from 'pino';
import { ConfigError } from '../../src/config/fields.js';
import type { GcResult } from '../../src/gc/collector.js';
import { parseGcSchedule, startGcSchedule } from '../../src/gc/schedule.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { startBerth } from '../helpers/berth.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';

t.test('berth.gc config', async (t) => {
  t.equal(parseGcSchedule({}), null, 'no section: no schedule');
  t.same(parseGcSchedule({ gc: { interval: '12h', grace: '2h', deleteuntagged: true } }), {
    intervalMs: 12 * 3_600_000,
    graceMs: 2 * 3_600_000,
    deleteUntagged: true,
  });
  t.same(parseGcSchedule({ gc: {} }), { intervalMs: 24 * 3_600_000, graceMs: 3_600_000, deleteUntagged: false }, 'defaults');
  t.equal(parseGcSchedule({ gc: { interval: 0 } }), null, 'interval 0 disables it');
  t.throws(
    () => parseGcSchedule({ gc: { grace: 'soon' } }),
    new ConfigError('berth.gc.grace: expected a duration such as 30s, 10m or 24h, got "soon"'),
  );
  const warnings: string[] = [];
  parseGcSchedule({ gc: { grace: '10s', intervall: '1h' } }, (w) => warnings.push(w));
  t.same(warnings, [
    'berth.gc.intervall: unknown configuration key, ignored',
    'berth.gc.grace: under a minute is unsafe while the registry serves pushes',
  ]);
});

t.test('the schedule runs gc periodically and reports results until stopped', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  const orphan = await client.pushBlob('app', randomLayer(1234));
  const results: GcResult[] = [];
  const schedule = startGcSchedule(
    new FilesystemDriver({ rootDirectory: berth.root }),
    { intervalMs: 100, graceMs: 0, deleteUntagged: false, onResult: (r) => results.push(r) },
    pino({ level: 'silent' }),
  );
  t.teardown(() => schedule.stop());
  while (results.length < 2) await new Promise((r) => setTimeout(r, 50));
  schedule.stop();
  const count = results.length;
  t.equal(results[0]?.blobsDeleted, 1, 'the first run deleted the orphan');
  t.equal(results[0]?.bytesReclaimed, 1234);
  t.equal(results[1]?.blobsDeleted, 0, 'the next found nothing');
  t.equal(schedule.lastResult(), results[count - 1]);
  t.equal(await client.getBlobDigest('app', orphan.digest), 404);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(results.length, count, 'no run after stop()');
});
