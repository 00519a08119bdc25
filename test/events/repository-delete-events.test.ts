import t from 'tap';
import { startBerth } from '../helpers/berth.js';
import { startEventReceiver } from '../helpers/event-receiver.js';
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
