import { randomUUID } from 'node:crypto';
import t, { type Test } from 'tap';
import { Redis } from 'ioredis';
import { BackendUnavailableError } from '../../src/errors/registry-error.js';
import { MemorySessionStore } from '../../src/uploads/memory-session-store.js';
import { parseRedisAddr, RedisSessionStore } from '../../src/uploads/redis-session-store.js';
import type { UploadSession } from '../../src/uploads/session-store.js';
import { startRedis } from '../helpers/redis.js';
import { sessionStoreSuite } from '../suites/session-store-suite.js';

/** Longest we wait for an operation against a stopped Redis before calling it a hang. */
const HANG_MS = 10_000;

function session(overrides: Partial<UploadSession> = {}): UploadSession {
  return { id: randomUUID(), repository: 'library/busybox', offset: 0, startedAt: Date.now(), ...overrides };
}

/** Resolves with what `promise` rejected with, or fails the test if it resolved or did not settle within HANG_MS. */
async function rejection(t: Test, promise: Promise<unknown>, what: string): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<'hang'>((resolve) => (timer = setTimeout(() => resolve('hang'), HANG_MS)));
  const outcome = await Promise.race([
    promise.then(
      () => ({ resolved: true as const }),
      (err: unknown) => ({ resolved: false as const, err }),
    ),
    hang,
  ]);
  clearTimeout(timer);
  if (outcome === 'hang') {
    t.fail(`${what}: still pending after ${HANG_MS} ms`);
    return undefined;
  }
  if (outcome.resolved) {
    t.fail(`${what}: resolved although Redis is down`);
    return undefined;
  }
  return outcome.err;
}

// The cases run two at a time: each has its own store (and redis-server), and most of their time is waiting for TTLs
// and timeouts.
t.jobs = 2;

t.test('memory', async (t) => {
  await sessionStoreSuite(t, 'MemorySessionStore', async ({ ttlMs }) => new MemorySessionStore({ ttlMs }));
});

t.test('redis', async (t) => {
  const redis = await startRedis(t);

  await sessionStoreSuite(t, 'RedisSessionStore', async ({ ttlMs }) =>
    // A fresh prefix per store: every subtest starts from an empty store, as with the memory store.
    RedisSessionStore.connect({ addr: redis.addr, db: 0, keyPrefix: `test-${randomUUID()}:`, ttlMs }),
  );

  t.test('keys live under ${keyPrefix}upload:${id} with a TTL', async (t) => {
    const client = new Redis({ host: redis.host, port: redis.port, lazyConnect: true });
    await client.connect();
    t.teardown(() => client.quit());
    const store = new RedisSessionStore({ redis: client, keyPrefix: 'berth:', ttlMs: 60_000 });
    const s = session({ writerState: { size: 3, parts: [] } });
    await store.create(s);
    const key = `berth:upload:${s.id}`;
    t.equal(await client.exists(key), 1);
    const ttl = await client.pttl(key);
    t.ok(ttl > 50_000 && ttl <= 60_000, `PEXPIRE set on create (pttl ${ttl})`);

    // The store does not own a client it was given: close() leaves it usable.
    await store.close();
    t.equal(await client.ping(), 'PONG', 'a client the store does not own stays open');
  });

  t.test('two instances on one Redis see each other', async (t) => {
    const keyPrefix = `shared-${randomUUID()}:`;
    const a = RedisSessionStore.connect({ addr: redis.addr, db: 0, keyPrefix, ttlMs: 60_000 });
    const b = RedisSessionStore.connect({ addr: redis.addr, db: 0, keyPrefix, ttlMs: 60_000 });
    t.teardown(() => Promise.all([a.close(), b.close()]));

    const s = session({ writerState: { size: 0, parts: [[], [{ n: 1 }]] } });
    await a.create(s);
    t.strictSame(await b.get(s.id), s, 'B reads what A created');

    const leaseA = await a.acquire(s.id, 0, 60_000);
    t.equal(leaseA.ok, true);
    if (!leaseA.ok) return;
    t.match(await b.acquire(s.id, 0, 60_000), { ok: false, reason: 'busy' }, "B sees A's lease");
    t.equal(await a.release(s.id, leaseA.token, { offset: 4096, writerState: { size: 4096, parts: [[]] } }), true);

    const leaseB = await b.acquire(s.id, 4096, 60_000);
    t.equal(leaseB.ok, true, "B continues at A's offset");
    if (leaseB.ok) t.strictSame(leaseB.session.writerState, { size: 4096, parts: [[]] }, "with A's writer state");

    // Concurrent acquires from both instances: still exactly one winner.
    const other = session({ offset: 1 });
    await a.create(other);
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).acquire(other.id, 1, 60_000)));
    t.equal(results.filter((r) => r.ok).length, 1, 'exactly one of 20 acquires over two instances wins');

    // Another prefix is another namespace.
    const elsewhere = RedisSessionStore.connect({ addr: redis.addr, db: 0, keyPrefix: `other-${randomUUID()}:`, ttlMs: 60_000 });
    t.teardown(() => elsewhere.close());
    t.equal(await elsewhere.get(s.id), null, 'a store with another key prefix does not see the session');
    // And another database, too.
    const otherDb = RedisSessionStore.connect({ addr: redis.addr, db: 1, keyPrefix, ttlMs: 60_000 });
    t.teardown(() => otherDb.close());
    t.equal(await otherDb.get(s.id), null, 'a store on another db does not see the session');
  });

  t.test('scripts survive a Redis that forgot them (SCRIPT FLUSH)', async (t) => {
    const store = RedisSessionStore.connect({ addr: redis.addr, db: 0, keyPrefix: `flush-${randomUUID()}:`, ttlMs: 60_000 });
    t.teardown(() => store.close());
    const s = session();
    await store.create(s);
    const first = await store.acquire(s.id, 0, 60_000);
    t.equal(first.ok, true);
    if (!first.ok) return;
    await store.redis.script('FLUSH');
    t.equal(await store.release(s.id, first.token, { offset: 9 }), true, 'release reloads its script');
    t.match(await store.acquire(s.id, 9, 60_000), { ok: true }, 'acquire reloads its script');
  });
});

t.test('Redis down: operations reject with BackendUnavailableError, no hang', async (t) => {
  const redis = await startRedis(t);
  const store = RedisSessionStore.connect({ addr: redis.addr, db: 0, keyPrefix: 'down:', ttlMs: 60_000 });
  t.teardown(() => store.close());
  const s = session();
  await store.create(s);
  await store.health();
  const lease = await store.acquire(s.id, 0, 60_000);
  t.equal(lease.ok, true);
  const token = lease.ok ? lease.token : 'none';

  await redis.stop();

  const operations: Array<[string, () => Promise<unknown>]> = [
    ['health', () => store.health()],
    ['create', () => store.create(session())],
    ['get', () => store.get(s.id)],
    ['acquire', () => store.acquire(s.id, 0, 60_000)],
    ['release', () => store.release(s.id, token, { offset: 1 })],
    ['delete', () => store.delete(s.id)],
  ];
  // Run them together, as concurrent requests would: none may wait for Redis to come back.
  const errors = await Promise.all(operations.map(([name, op]) => rejection(t, op(), name)));
  operations.forEach(([name], i) => {
    t.ok(errors[i] instanceof BackendUnavailableError, `${name} rejects with BackendUnavailableError`, { found: errors[i] });
  });

  // Once Redis is back on the same address the store reconnects by itself.
  await startRedis(t, { port: redis.port });
  let healthy = false;
  for (let i = 0; i < 50 && !healthy; i++) {
    healthy = await store.health().then(
      () => true,
      () => new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 200)),
    );
  }
  t.ok(healthy, 'health() resolves again after Redis restarts');
  const fresh = session();
  await store.create(fresh);
  t.strictSame(await store.get(fresh.id), fresh, 'and the store works again');
});

t.test('Redis accepts connections but does not answer: operations time out as BackendUnavailableError', async (t) => {
  const redis = await startRedis(t);
  const store = RedisSessionStore.connect({ addr: redis.addr, db: 0, keyPrefix: 'frozen:', ttlMs: 60_000 });
  t.teardown(() => store.close());
  const s = session();
  await store.create(s);

  process.kill(redis.pid, 'SIGSTOP');
  try {
    const errors = await Promise.all([
      rejection(t, store.get(s.id), 'get'),
      rejection(t, store.acquire(s.id, 0, 60_000), 'acquire'),
      rejection(t, store.health(), 'health'),
    ]);
    for (const err of errors) t.ok(err instanceof BackendUnavailableError, 'rejects with BackendUnavailableError', { found: err });
  } finally {
    process.kill(redis.pid, 'SIGCONT');
  }
  t.strictSame(await store.get(s.id), s, 'works again once Redis answers');
});

t.test('Redis never reachable: operations reject with BackendUnavailableError', async (t) => {
  // A port nobody listens on: the one of a Redis we started and stopped.
  const gone = await startRedis(t);
  await gone.stop();
  const store = RedisSessionStore.connect({ addr: gone.addr, db: 0, keyPrefix: 'never:', ttlMs: 60_000 });
  t.teardown(() => store.close());
  t.ok((await rejection(t, store.health(), 'health')) instanceof BackendUnavailableError, 'health rejects');
  t.ok((await rejection(t, store.get(randomUUID()), 'get')) instanceof BackendUnavailableError, 'get rejects');
  t.ok((await rejection(t, store.create(session()), 'create')) instanceof BackendUnavailableError, 'create rejects');
});

t.test('parseRedisAddr', async (t) => {
  t.strictSame(parseRedisAddr('127.0.0.1:6380'), { host: '127.0.0.1', port: 6380 });
  t.strictSame(parseRedisAddr('redis.internal:6379'), { host: 'redis.internal', port: 6379 });
  t.strictSame(parseRedisAddr('[::1]:7000'), { host: '::1', port: 7000 });
  t.throws(() => parseRedisAddr('redis:http'), /invalid redis address/);
  t.throws(() => parseRedisAddr(':6379'), /invalid redis address/);
  t.throws(() => parseRedisAddr('host:70000'), /invalid redis address/);
});
