import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { HttpError, RegistryClient, randomLayer } from '../helpers/registry-client.js';
import { startBerth } from '../helpers/berth.js';
import { startRedis } from '../helpers/redis.js';

interface Json {
  [k: string]: unknown;
}

async function catalog(url: string): Promise<string[]> {
  return ((await (await fetch(`${url}/v2/_catalog?n=1000`)).json()) as { repositories: string[] }).repositories;
}

t.test('two berth instances sharing storage and Redis see each other’s pushes and deletes in the index at once', async (t) => {
  const redis = await startRedis(t);
  const root = await mkdtemp(join(tmpdir(), 'berth-shared-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const raw = {
    storage: { filesystem: { rootdirectory: root } },
    redis: { addr: redis.addr, keyprefix: 'shared:' },
    berth: { index: { reconcileinterval: 0 } },
  };
  const a = await startBerth(t, raw);
  await a.app.berth.catalog.idle();
  const b = await startBerth(t, raw);
  await b.app.berth.catalog.idle();
  t.equal(await b.app.berth.catalog.isBuilt(), true, 'the second instance finds the index built');

  await new RegistryClient(a.url).pushImage('from/a', '1', [randomLayer()]);
  await new RegistryClient(b.url).pushImage('from/b', '1', [randomLayer()]);
  t.strictSame(await catalog(b.url), ['from/a', 'from/b'], 'B lists what A pushed, without a rebuild');
  t.strictSame(await catalog(a.url), ['from/a', 'from/b']);
  const search = (await (await fetch(`${b.url}/v1/search?q=from`)).json()) as Json;
  t.equal(search.num_results, 2);

  t.equal((await fetch(`${a.url}/api/v1/repositories/from/b`, { method: 'DELETE' })).status, 202);
  t.strictSame(await catalog(b.url), ['from/a'], 'a delete on A leaves B’s lists at once');
});

t.test('a repository delete racing pushes: pushes land entirely after it or fail cleanly', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  for (let round = 0; round < 4; round++) {
    const repo = `race/r${round}`;
    await client.pushImage(repo, 'seed', [randomLayer()]);
    const failures: number[] = [];
    const pushes = Array.from({ length: 6 }, async (_, i) => {
      await new Promise((r) => setTimeout(r, i * 3));
      try {
        await client.pushImage(repo, `t${i}`, [randomLayer(50_000), randomLayer(1000)]);
      } catch (err) {
        if (!(err instanceof HttpError)) throw err;
        failures.push(err.status);
      }
    });
    const del = (async () => {
      await new Promise((r) => setTimeout(r, 5));
      return (await fetch(`${berth.url}/api/v1/repositories/${repo}`, { method: 'DELETE' })).status;
    })();
    await Promise.all(pushes);
    t.equal(await del, 202, `round ${round}: the delete succeeded`);
    t.ok(
      failures.every((s) => s >= 400 && s < 500),
      `round ${round}: failed pushes failed cleanly (${failures.join(', ') || 'none failed'})`,
    );
    // Whatever survived is whole: every tag pulls completely.
    const tags = await fetch(`${berth.url}/v2/${repo}/tags/list`);
    const listed = tags.status === 200 ? ((await tags.json()) as { tags: string[] }).tags : [];
    t.notOk(listed.includes('seed'), `round ${round}: the tag pushed before the delete is gone`);
    for (const tag of listed) t.strictSame(await client.pull(repo, tag), [], `round ${round}: ${repo}:${tag} pulls completely`);
    const inCatalog = (await catalog(berth.url)).includes(repo);
    t.equal(inCatalog, listed.length > 0 || tags.status === 200, `round ${round}: the index agrees with storage`);
  }
});
