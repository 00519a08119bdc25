import { Redis } from 'ioredis';
import t from 'tap';
import { redisClientOptions } from '../../src/config/redis-addr.js';
import { LocalFillCoordinator, RedisFillCoordinator, type FillCoordinator } from '../../src/proxy/fill-coordinator.js';
import { startRedis } from '../helpers/redis.js';

/**
 * The fill coordinator seam: which process fetches a blob from its upstream. The local one lets every caller fill
 * (single-flight is the caller's); the Redis one gives one lease per key across processes, publishes where the filler
 * writes, and hands the lease on when its holder stops renewing it.
 */

const PATH_A = '/docker/registry/v2/repositories/fleet/app/_uploads/aaaa-1/data';
const PATH_B = '/docker/registry/v2/repositories/fleet/app/_uploads/bbbb-2/data';

t.test('local: every caller gets the lease, nobody is ever seen filling', async (t) => {
  const c: FillCoordinator = new LocalFillCoordinator();
  t.equal(c.shared, false);
  const first = await c.acquire('up/fleet/app@sha256:1', PATH_A);
  const second = await c.acquire('up/fleet/app@sha256:1', PATH_B);
  t.ok('lease' in first && 'lease' in second, 'both callers fill');
  t.equal(await c.holder('up/fleet/app@sha256:1'), null);
  await c.close();
});

t.test('redis: one lease per key across processes, published, released, handed on after expiry', async (t) => {
  const redis = await startRedis(t);
  const connect = (ttlMs: number) =>
    new RedisFillCoordinator(new Redis(redisClientOptions({ addr: redis.addr, db: 0 })), { keyPrefix: 'test:', ttlMs });
  const one = connect(600);
  const two = connect(600);
  t.teardown(async () => {
    await one.close();
    await two.close();
  });
  const key = 'up/fleet/app@sha256:1';

  const won = await one.acquire(key, PATH_A);
  t.ok('lease' in won, 'the first caller gets the lease');
  const lost = await two.acquire(key, PATH_B);
  t.same(
    lost,
    { holder: { token: (lost as { holder: { token: string } }).holder.token, path: PATH_A, size: undefined } },
    'the second sees where the filler writes, size pending',
  );
  if (!('lease' in won)) return;

  await won.lease.publish(12345);
  t.match(await two.holder(key), { path: PATH_A, size: 12345 }, 'the size is published');
  await won.lease.publish(null);
  t.match(await two.holder(key), { path: PATH_A, size: null }, 'an undeclared size too');

  // Renewed while held: still there after several TTLs.
  await new Promise((r) => setTimeout(r, 2000));
  t.match(await two.holder(key), { path: PATH_A }, 'the holder keeps the lease alive');
  t.ok('holder' in (await two.acquire(key, PATH_B)), 'nobody else gets it meanwhile');

  await won.lease.release();
  t.equal(await two.holder(key), null, 'released: nobody fills');
  const next = await two.acquire(key, PATH_B);
  t.ok('lease' in next, 'the next caller gets it');

  // A holder that stops renewing (its process died) loses the lease after the TTL.
  const raw = new Redis(redisClientOptions({ addr: redis.addr, db: 0 }));
  t.teardown(() => raw.quit());
  const dying = connect(600);
  const other = 'up/fleet/app@sha256:2';
  t.ok('lease' in (await dying.acquire(other, PATH_A)), 'a lease for another key');
  await dying.close(); // stops renewing without releasing
  t.ok('holder' in (await two.acquire(other, PATH_B)), 'held until it expires');
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(await two.holder(other), null, 'expired');
  const taken = await two.acquire(other, PATH_B);
  t.ok('lease' in taken, 'and taken over');
  if ('lease' in taken) await taken.lease.release();
  if ('lease' in next) await next.lease.release();
  t.same(await raw.keys('test:fill:*'), [], 'no lease left');
});
