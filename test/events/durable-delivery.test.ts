import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { stringify } from 'yaml';
import { spawnBerth, type BerthProcess } from '../helpers/berth-process.js';
import { startEventReceiver } from '../helpers/event-receiver.js';
import { tempDir } from '../helpers/ports.js';
import { startRedis } from '../helpers/redis.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';

/** Writes a config file for `berth serve` and returns its path. */
async function configFile(dir: string, name: string, raw: Record<string, unknown>): Promise<string> {
  const file = join(dir, `${name}.yml`);
  await writeFile(file, stringify(raw));
  return file;
}

function serve(t: Test, file: string, name: string): Promise<BerthProcess> {
  return spawnBerth(t, { BERTH_CONFIG: file }, { name });
}

t.test('kill -9 with events pending and the receiver down: a restarted berth delivers them all, each once, in order', async (t) => {
  const dir = await tempDir(t, 'berth-events-');
  const root = join(dir, 'storage');
  let rx = await startEventReceiver(t);
  const port = rx.port;
  await rx.close();
  const file = await configFile(dir, 'berth', {
    log: { level: 'warn' },
    storage: { filesystem: { rootdirectory: root }, maintenance: { uploadpurging: { enabled: false } } },
    notifications: { endpoints: [{ name: 'hook', url: rx.url, timeout: '500ms', threshold: 2, backoff: '200ms' }] },
  });
  const first = await serve(t, file, 'first');
  const client = new RegistryClient(first.url);
  for (let i = 0; i < 3; i++) await client.pushImage(`durable/r${i}`, 'v1', [randomLayer(300)]);
  // Every answer came after its events were queued: they are all on disk now.
  const queueDir = join(root, 'berth', 'events', (await readdir(join(root, 'berth', 'events')))[0] ?? '');
  const names = (await readdir(queueDir)).sort();
  const queued = await Promise.all(
    names.map(async (n) => (JSON.parse(await readFile(join(queueDir, n), 'utf8')) as { event: { id: string } }).event.id),
  );
  t.equal(queued.length, 9, '3 images x (layer, config, manifest)');
  const exit = await first.stop('SIGKILL');
  t.equal(exit.signal, 'SIGKILL');

  rx = await startEventReceiver(t, port);
  const second = await serve(t, file, 'second');
  const got = await rx.waitFor((e) => e.length >= queued.length, 30_000);
  await new Promise((r) => setTimeout(r, 500));
  t.same(
    rx.events().map((e) => e.id),
    queued,
    'every queued event, once, in the order they were queued',
  );
  t.same(
    got.slice(-3).map((e) => e.action),
    ['push', 'push', 'push'],
  );
  t.same(await readdir(queueDir), [], 'delivered events leave the queue');
  await second.stop();
});

t.test('two replicas on one Redis: each event delivered once, whichever replica took the request', async (t) => {
  const dir = await tempDir(t, 'berth-events-');
  const redis = await startRedis(t);
  const rx = await startEventReceiver(t);
  const file = await configFile(dir, 'shared', {
    log: { level: 'warn' },
    storage: { filesystem: { rootdirectory: join(dir, 'storage') }, maintenance: { uploadpurging: { enabled: false } } },
    redis: { addr: redis.addr },
    notifications: { endpoints: [{ name: 'hook', url: rx.url, timeout: '1s', threshold: 2, backoff: '100ms' }] },
  });
  const a = await serve(t, file, 'a');
  const b = await serve(t, file, 'b');
  const image = await new RegistryClient(a.url).pushImage('shared/img', 'v1', [randomLayer(500)]);
  const pulls = 30;
  await Promise.all(
    Array.from({ length: pulls }, async (_, i) => {
      const res = await fetch(`${(i % 2 ? a : b).url}/v2/shared/img/manifests/v1`, {
        headers: { accept: image.manifest.mediaType, 'user-agent': `puller/${i}` },
      });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`pull ${i}: ${res.status}`);
    }),
  );
  const total = 3 + pulls;
  await rx.waitFor((e) => e.length >= total, 30_000);
  await new Promise((r) => setTimeout(r, 1500));
  const events = rx.events();
  t.equal(events.length, total, 'nothing delivered twice');
  t.equal(new Set(events.map((e) => e.id)).size, total);
  t.same(
    events
      .filter((e) => e.action === 'pull')
      .map((e) => (e.request as { useragent: string }).useragent)
      .sort(),
    Array.from({ length: pulls }, (_, i) => `puller/${i}`).sort(),
    'every pull, from both replicas',
  );
  const delivered = async (p: BerthProcess) => {
    const text = await (await fetch(`${p.url}/metrics`)).text();
    return Number(/^berth_events_delivered_total\{endpoint="hook"\} (\d+)/m.exec(text)?.[1] ?? 0);
  };
  t.equal((await delivered(a)) + (await delivered(b)), total, 'the replicas together delivered each event once');
  const pending = /^berth_events_pending\{endpoint="hook"\} (\d+)/m.exec(await (await fetch(`${a.url}/metrics`)).text())?.[1];
  t.equal(pending, '0');
});
