import { mkdtemp, rm, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { RegistryClient, randomLayer } from '../helpers/registry-client.js';
import { startBerth } from '../helpers/berth.js';
import { runBerth } from '../helpers/berth-process.js';
import { startRedis } from '../helpers/redis.js';

/** `berth repo rm` and `berth index rebuild` beside a running server that shares storage and Redis. */
t.test('berth repo rm and berth index rebuild', async (t) => {
  const redis = await startRedis(t);
  const root = await mkdtemp(join(tmpdir(), 'berth-catalog-cli-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const berth = await startBerth(t, {
    storage: { filesystem: { rootdirectory: root } },
    redis: { addr: redis.addr, keyprefix: 'clitest-' },
    berth: { index: { reconcileinterval: 0 } },
  });
  await berth.app.berth.catalog.idle();
  const client = new RegistryClient(berth.url);
  await client.pushImage('doomed', '1', [randomLayer()]);
  await client.pushImage('kept', '1', [randomLayer()]);
  const env = {
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: root,
    REGISTRY_REDIS_ADDR: redis.addr,
    REGISTRY_REDIS_KEYPREFIX: 'clitest-',
    REGISTRY_STORAGE_DELETE_ENABLED: 'true',
  };
  const catalog = async () => ((await (await fetch(`${berth.url}/v2/_catalog`)).json()) as { repositories: string[] }).repositories;

  const removed = await runBerth(['repo', 'rm', 'doomed'], { env });
  t.equal(removed.code, 0, removed.output);
  t.strictSame(await catalog(), ['kept'], 'the running server no longer lists it (shared index)');
  t.equal((await client.getManifest('doomed', '1')).status, 404);
  const again = await runBerth(['repo', 'rm', 'doomed'], { env });
  t.equal(again.code, 1);
  t.match(again.stderr, /no repository doomed/);
  const bad = await runBerth(['repo', 'delete', 'x'], { env });
  t.equal(bad.code, 2);
  const disabled = await runBerth(['repo', 'rm', 'kept'], { env: { ...env, REGISTRY_STORAGE_DELETE_ENABLED: 'false' } });
  t.equal(disabled.code, 1, 'deletes disabled: refused');
  t.match(disabled.stderr, /storage\.delete\.enabled/);

  // A repository written straight into storage appears after `berth index rebuild`.
  await cp(join(root, 'docker/registry/v2/repositories/kept'), join(root, 'docker/registry/v2/repositories/copied'), { recursive: true });
  t.strictSame(await catalog(), ['kept']);
  const rebuilt = await runBerth(['index', 'rebuild'], { env });
  t.equal(rebuilt.code, 0, rebuilt.output);
  t.match(rebuilt.stdout, /2 repositories/);
  t.strictSame(await catalog(), ['copied', 'kept']);
});
