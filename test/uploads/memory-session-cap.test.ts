/** The in-memory session store is bounded: abandoned sessions cannot grow it without end. */
import t from 'tap';
import { MemorySessionStore } from '../../src/uploads/memory-session-store.js';

const session = (i: number) => ({
  id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
  repository: 'app',
  offset: 0,
  startedAt: Date.now(),
});

t.test('25 000 abandoned sessions: at most maxSessions kept, the idle longest go first', async (t) => {
  const store = new MemorySessionStore({ ttlMs: 24 * 3600_000, maxSessions: 1000 });
  t.teardown(() => store.close());
  for (let i = 0; i < 25_000; i++) await store.create(session(i));
  t.equal(store.size, 1000, 'bounded');
  t.equal(await store.get(session(0).id), null, 'the oldest are gone');
  t.not(await store.get(session(24_999).id), null, 'the newest are kept');
});

t.test('a session being written to is never evicted; a recently used one outlives older idle ones', async (t) => {
  const store = new MemorySessionStore({ ttlMs: 24 * 3600_000, maxSessions: 3 });
  t.teardown(() => store.close());
  for (let i = 0; i < 3; i++) await store.create(session(i));
  const leased = await store.acquire(session(0).id, undefined, 60_000);
  t.ok(leased.ok);
  const used = await store.acquire(session(1).id, undefined, 60_000);
  if (!used.ok) throw new Error('not acquired');
  t.ok(await store.release(session(1).id, used.token, { offset: 5 }));
  await store.create(session(3));
  t.equal(await store.get(session(2).id), null, 'the idle longest went');
  t.not(await store.get(session(0).id), null, 'the leased one stays');
  t.not(await store.get(session(1).id), null, 'the recently released one stays');
  await store.create(session(4));
  t.equal(await store.get(session(1).id), null, 'then the next idle one');
  t.not(await store.get(session(0).id), null, 'never the one being written to');
  if (leased.ok) t.ok(await store.release(session(0).id, leased.token, { offset: 1 }), 'its writer can still release it');
});
