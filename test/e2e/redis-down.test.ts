import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { spawnBerth } from '../helpers/berth-process.js';
import { tempDir } from '../helpers/ports.js';
import { startRedis } from '../helpers/redis.js';
import { randomLayer, RegistryClient, type ErrorBody } from '../helpers/registry-client.js';

/**
 * Issue 17: "/readyz answers what a load balancer needs: a replica that can still serve pulls stays ready when Redis
 * is down (uploads then fail with a clear 503), with the degraded parts named in the body and in metrics; today one
 * Redis restart takes every replica out of the Service." A real berth process and a real redis-server, stopped and
 * started again on the same port.
 */

/** The value of one sample line of the text exposition (`name{labels} value`), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** A berth process using the Redis at `addr` (upload purging off), with `repo:v1` pushed. */
async function berthOnRedis(t: Test, addr: string, rootPrefix: string, repo: string) {
  const root = await tempDir(t, rootPrefix);
  const berth = await spawnBerth(t, {
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: root,
    REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED: 'false',
    REGISTRY_REDIS_ADDR: addr,
    REGISTRY_LOG_LEVEL: 'fatal',
  });
  const client = new RegistryClient(berth.url);
  const img = await client.pushImage(repo, 'v1', [randomLayer(4000)]);
  return { berth, client, img };
}

// The two cases (each with its own redis-server, berth and storage) run at the same time: both mostly wait, for
// ioredis to reconnect or for the cached write probe of /readyz to expire.
t.jobs = 2;

t.test('with Redis stopped, pulls keep working, /readyz stays 200 naming redis as degraded, uploads get 503; Redis back heals', async (t) => {
  const redis = await startRedis(t);
  const { client, img } = await berthOnRedis(t, redis.addr, 'berth-redis-down-', 'app/web');
  const ready = await client.request('GET', '/readyz');
  t.equal(ready.status, 200);
  t.same((JSON.parse(ready.body.toString()) as { degraded: string[] }).degraded, [], 'nothing degraded while Redis is up');

  await redis.stop();

  t.same(await client.pull('app/web', 'v1'), [], 'a pull still works, every digest verified');
  t.equal((await client.getManifest('app/web', 'v1')).digest, img.manifest.digest);
  const down = await client.request('GET', '/readyz');
  t.equal(down.status, 200, 'the replica stays ready: it can serve pulls');
  const body = JSON.parse(down.body.toString()) as { status: string; degraded: string[]; checks: Record<string, string> };
  t.equal(body.status, 'degraded');
  t.same(body.degraded, ['redis'], 'the degraded part is named');
  t.equal(body.checks.storage, 'ok');

  const upload = await client.request('POST', '/v2/app/web/blobs/uploads/');
  t.equal(upload.status, 503, 'an upload fails with 503');
  const err = JSON.parse(upload.body.toString()) as ErrorBody;
  t.equal(err.errors[0]?.code, 'UNAVAILABLE');
  t.match(err.errors[0]?.message ?? '', /upload session store/, 'the message says what is unavailable');
  t.ok(upload.headers.get('retry-after'), 'with Retry-After');

  const metrics = (await client.request('GET', '/metrics')).body.toString();
  t.equal(sample(metrics, 'berth_degraded{part="redis"}'), 1, 'the degraded part is in the metrics');
  t.equal(sample(metrics, 'berth_degraded{part="storage"}'), 0);
  t.ok((sample(metrics, 'berth_redis_errors_total{operation="upload-start"}') ?? 0) >= 1, 'the failed upload counted as a Redis error');
  t.ok((sample(metrics, 'berth_redis_errors_total{operation="health"}') ?? 0) >= 1, 'the failed readiness ping too');
  t.equal(sample(metrics, 'berth_storage_errors_total{driver="filesystem",operation="upload"}'), undefined, 'not as a storage error');

  await startRedis(t, { port: redis.port });
  // ioredis reconnects by itself; wait (bounded) until readiness says so, then push again.
  let healed = false;
  for (let i = 0; i < 100 && !healed; i++) {
    const r = await client.request('GET', '/readyz');
    healed = r.status === 200 && (JSON.parse(r.body.toString()) as { degraded: string[] }).degraded.length === 0;
    if (!healed) await sleep(100);
  }
  t.ok(healed, 'readiness reports nothing degraded once Redis is back');
  const again = await client.pushImage('app/web', 'v2', [randomLayer(3000)]);
  t.equal((await client.getManifest('app/web', 'v2')).digest, again.manifest.digest, 'uploads work again');
  const after = (await client.request('GET', '/metrics')).body.toString();
  t.equal(sample(after, 'berth_degraded{part="redis"}'), 0);
});

t.test('with Redis frozen (SIGSTOP), /readyz stays 200 and pulls work; uploads answer 503 without hanging; SIGCONT heals', async (t) => {
  // A frozen Redis accepts connections and never answers: unlike a stopped one, nothing fails fast. The storage
  // write probe of /readyz once went through the link cache, whose invalidation waited on Redis: every replica
  // turned unready. It writes straight to storage now.
  const redis = await startRedis(t);
  let frozen = false;
  t.teardown(() => {
    if (frozen) process.kill(redis.pid, 'SIGCONT');
  });
  const { client, img } = await berthOnRedis(t, redis.addr, 'berth-redis-frozen-', 'app/api');

  process.kill(redis.pid, 'SIGSTOP');
  frozen = true;

  // /readyz reuses a storage write probe for 5 s after it finished (the one of start-up may still be fresh): ask
  // until one request started after that, so a probe made while Redis is frozen has been seen.
  const probeStale = Date.now() + 5500;
  const answers: { status: number; storage?: string; degraded: string[] }[] = [];
  let asked: number;
  do {
    asked = Date.now();
    const ready = await client.request('GET', '/readyz');
    const body = JSON.parse(ready.body.toString()) as { degraded: string[]; checks: Record<string, string> };
    answers.push({ status: ready.status, storage: body.checks.storage, degraded: body.degraded });
  } while (asked < probeStale);
  t.ok(answers.length >= 2, `asked ${answers.length} times`);
  t.same(
    answers.filter((a) => a.status !== 200 || a.storage !== 'ok'),
    [],
    'the replica stays ready while Redis does not answer, and storage is not blamed for it',
  );
  t.same(answers.at(-1)?.degraded, ['redis'], 'redis is named as degraded');
  t.same(await client.pull('app/api', 'v1'), [], 'a pull works, every digest verified');
  t.equal((await client.getManifest('app/api', 'v1')).digest, img.manifest.digest);
  const upload = await client.request('POST', '/v2/app/api/blobs/uploads/');
  t.equal(upload.status, 503, 'an upload answers 503 (bounded by the Redis command timeout), not a hang');
  t.equal((JSON.parse(upload.body.toString()) as ErrorBody).errors[0]?.code, 'UNAVAILABLE');
  t.equal((await client.request('GET', '/readyz')).status, 200, 'still ready after the failed upload');

  process.kill(redis.pid, 'SIGCONT');
  frozen = false;
  let healed = false;
  for (let i = 0; i < 100 && !healed; i++) {
    const r = await client.request('GET', '/readyz');
    healed = r.status === 200 && (JSON.parse(r.body.toString()) as { degraded: string[] }).degraded.length === 0;
    if (!healed) await sleep(100);
  }
  t.ok(healed, 'readiness reports nothing degraded once Redis answers again');
  const again = await client.pushImage('app/api', 'v2', [randomLayer(3000)]);
  t.equal((await client.getManifest('app/api', 'v2')).digest, again.manifest.digest, 'uploads work again');
  t.same(await client.pull('app/api', 'v2'), [], 'and what was pushed pulls back');
});
