import { pino } from 'pino';
import t from 'tap';
import { runGc } from '../../src/gc/collector.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { startBerth } from '../helpers/berth.js';
import { startEventReceiver } from '../helpers/event-receiver.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';

t.test('gc deletions become delete events (no request, no actor) and audit lines', async (t) => {
  const rx = await startEventReceiver(t);
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
  const berth = await startBerth(t, { notifications: { endpoints: [{ name: 'rx', url: rx.url, backoff: '100ms' }] } }, { logger });
  const client = new RegistryClient(berth.url);
  const image = await client.pushImage('gc/a', 'v1', [randomLayer(1000), randomLayer(2000)]);
  const keep = await client.pushImage('gc/b', 'v1', [randomLayer(500)]);
  const del = await fetch(`${berth.url}/v2/gc/a/manifests/v1`, { method: 'DELETE' });
  t.equal(del.status, 202);
  const driver = new FilesystemDriver({ rootDirectory: berth.root });
  const result = await runGc(driver, { graceMs: 0, settleMs: 0, deleteUntagged: true, events: berth.app.berth.events });
  t.equal(result.manifestsDeleted, 1);
  const isGc = (e: Record<string, unknown>) => e.action === 'delete' && Object.keys(e.request as object).length === 0;
  const expected = 1 + 1 + image.layers.length; // the manifest, its config and its layers in gc/a
  const got = (await rx.waitFor((es) => es.filter(isGc).length >= expected)).filter(isGc);
  t.same(
    got.map((e) => JSON.stringify(e.target)).sort(),
    [
      { digest: image.manifest.digest, repository: 'gc/a' },
      { digest: image.config.digest, repository: 'gc/a' },
      ...image.layers.map((l) => ({ digest: l.digest, repository: 'gc/a' })),
    ]
      .map((x) => JSON.stringify(x))
      .sort(),
    'one delete per manifest and per repository link removed; nothing from gc/b',
  );
  for (const e of got) {
    t.same(e.actor, {});
    t.same(e.request, {});
  }
  t.notOk(got.some((e) => JSON.stringify(e).includes(keep.manifest.digest)));
  const audit = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.logger === 'audit' && l.action === 'gc delete');
  t.equal(audit.length, expected, 'one audit line per gc deletion');
  t.match(audit[0], { origin: 'gc', repository: 'gc/a' });
});
