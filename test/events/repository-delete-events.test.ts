import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { RawSection } from '../../src/config/fields.js';
import { runBerth } from '../helpers/berth-process.js';
import { startBerth } from '../helpers/berth.js';
import { startEventReceiver } from '../helpers/event-receiver.js';
import { startRedis } from '../helpers/redis.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';

t.test('a repository delete gives one delete event naming only the repository', async (t) => {
  const rx = await startEventReceiver(t);
  const berth = await startBerth(t, { notifications: { endpoints: [{ name: 'rx', url: rx.url, backoff: '100ms' }] } });
  const client = new RegistryClient(berth.url);
  await client.pushImage('doomed/app', 'v1', [randomLayer(1000)]);
  const del = await fetch(`${berth.url}/api/v1/repositories/doomed/app`, { method: 'DELETE' });
  t.equal(del.status, 202);
  await del.arrayBuffer();
  const isRepoDelete = (e: Record<string, unknown>) =>
    e.action === 'delete' && JSON.stringify(e.target) === JSON.stringify({ repository: 'doomed/app' });
  const got = (await rx.waitFor((es) => es.some(isRepoDelete))).filter(isRepoDelete);
  t.equal(got.length, 1, 'one event for the repository');
  const request = got[0]?.request as { method?: string } | undefined;
  t.equal(request?.method, 'DELETE', 'with the request that deleted it');
});

/**
 * `berth repo rm` in its own process queues the same event in the durable queue the config names (storage, or
 * Redis); the running server delivers it. Its context says it came from the command line.
 */
for (const queue of ['storage', 'redis'] as const) {
  t.test(`berth repo rm gives the same delete event, from the command line (${queue} queue)`, async (t) => {
    const rx = await startEventReceiver(t);
    const root = await mkdtemp(join(tmpdir(), 'berth-repo-rm-events-'));
    t.teardown(() => rm(root, { recursive: true, force: true }));
    const raw: Record<string, unknown> = {
      version: 0.1,
      storage: { filesystem: { rootdirectory: root }, delete: { enabled: true } },
      notifications: { endpoints: [{ name: 'rx', url: rx.url, backoff: '100ms' }] },
    };
    if (queue === 'redis') raw.redis = { addr: (await startRedis(t)).addr, keyprefix: 'rmevents-' };
    const configPath = join(root, 'config.yml');
    await writeFile(configPath, JSON.stringify(raw));
    const berth = await startBerth(t, raw as RawSection);
    const client = new RegistryClient(berth.url);
    await client.pushImage('doomed/cli', 'v1', [randomLayer(1000)]);
    await client.pushImage('kept', 'v1', [randomLayer(1000)]);

    const removed = await runBerth(['repo', 'rm', 'doomed/cli', '-c', configPath]);
    t.equal(removed.code, 0, removed.output);
    const audit = removed.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === 'audit');
    t.match(
      audit,
      { logger: 'audit', action: 'repository delete', origin: 'cli', repository: 'doomed/cli' },
      'the audit line says it came from the CLI',
    );
    // With Redis the command's changes reach the server's link cache at once (without, within `berth.linkcache.ttl`).
    if (queue === 'redis') t.equal((await client.getManifest('doomed/cli', 'v1')).status, 404, 'the repository is gone');

    const isRepoDelete = (e: Record<string, unknown>) =>
      e.action === 'delete' && JSON.stringify(e.target) === JSON.stringify({ repository: 'doomed/cli' });
    const got = (await rx.waitFor((es) => es.some(isRepoDelete))).filter(isRepoDelete);
    t.equal(got.length, 1, 'one event for the repository');
    const event = got[0] as { request: Record<string, string>; actor: { name?: string }; source: { addr: string; instanceID: string } };
    t.equal(event.request.useragent, 'berth repo rm', 'request.useragent names the command');
    t.equal(event.request.method, undefined, 'no HTTP method: no request made it');
    t.equal(event.request.addr, undefined, 'no client address');
    t.equal(event.request.host, hostname());
    t.match(event.request.id, /^[0-9a-f-]{36}$/);
    t.equal(event.actor.name, userInfo().username, 'the actor is the operating-system user who ran it');
    t.equal(event.source.addr, hostname(), 'source: the machine, no listening port');
    const serverEvent = rx.events().find((e) => e.action === 'push') as { source: { instanceID: string } } | undefined;
    t.not(event.source.instanceID, serverEvent?.source.instanceID, 'another process than the server');
    // Nothing else came from the command: its delete is the only event not sent by the server.
    const fromCli = rx.events().filter((e) => (e.source as { instanceID: string }).instanceID === event.source.instanceID);
    t.equal(fromCli.length, 1);
  });
}
