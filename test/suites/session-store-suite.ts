import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Test } from 'tap';
import type { WriterState } from '../../src/storage/driver.js';
import type { SessionStoreOptions, UploadSession, UploadSessionStore } from '../../src/uploads/session-store.js';

/** Makes a fresh, empty store; the suite closes it when the subtest that made it ends. */
export type MakeSessionStore = (options: SessionStoreOptions) => Promise<UploadSessionStore>;

/** Long enough that nothing expires during a test that is not about expiry. */
const LONG_TTL_MS = 60_000;
const LONG_LEASE_MS = 60_000;

/** A writer state shaped like a multipart S3 upload's: nested arrays, empty arrays and objects, strings with quotes. */
function richState(size: number): WriterState {
  return {
    size,
    uploadId: 'u-"quoted"/ünïcode',
    parts: [
      { number: 1, etag: '"9b2cf535f27731c974343645a3985328"', size: 5242880 },
      { number: 2, etag: '"b3f0c7f6bb763af1be91d9e74eabfeb1"', size: 17 },
    ],
    pending: [],
    nested: { matrix: [[1, 2], [], [[]]], empty: {}, flag: false, nothing: null },
  };
}

function newSession(overrides: Partial<UploadSession> = {}): UploadSession {
  return { id: randomUUID(), repository: 'library/alpine', offset: 0, startedAt: 1_700_000_000_123, ...overrides };
}

/**
 * The `UploadSessionStore` contract (src/uploads/session-store.ts), run against one implementation.
 * `makeStore` is called once per subtest, so subtests can use different TTLs; each store is closed at the end.
 */
export async function sessionStoreSuite(t: Test, name: string, makeStore: MakeSessionStore): Promise<void> {
  async function open(t: Test, ttlMs = LONG_TTL_MS): Promise<UploadSessionStore> {
    const store = await makeStore({ ttlMs });
    t.teardown(() => store.close());
    return store;
  }

  await t.test(`${name}: session store contract`, async (t) => {
    t.test('create then get returns the session exactly, writer state included', async (t) => {
      const store = await open(t);
      t.type(store.name, 'string');
      t.not(store.name, '');

      const session = newSession({ offset: 5_000_000_000, writerState: richState(5_000_000_000) });
      await store.create(structuredClone(session));
      t.strictSame(await store.get(session.id), session, 'nested arrays, empty arrays and objects survive');

      // "writerState: Absent before the first byte."
      const fresh = newSession();
      await store.create(fresh);
      const got = await store.get(fresh.id);
      t.strictSame(got, fresh);
      t.notOk(got !== null && 'writerState' in got, 'no writerState key when there is none');

      // Callers must not be able to change a stored session by mutating what they passed in or got back.
      const original = newSession({ writerState: richState(3) });
      const passed = structuredClone(original);
      await store.create(passed);
      passed.offset = 99;
      passed.writerState!.size = 99;
      const first = await store.get(original.id);
      t.strictSame(first, original, 'mutating the created object changes nothing');
      (first!.writerState!.parts as unknown[]).push('mutated');
      t.strictSame(await store.get(original.id), original, 'mutating a returned session changes nothing');
    });

    t.test('an unknown session', async (t) => {
      const store = await open(t);
      const id = randomUUID();
      t.equal(await store.get(id), null, 'get returns null');
      t.strictSame(await store.acquire(id, undefined, LONG_LEASE_MS), { ok: false, reason: 'unknown' });
      t.strictSame(await store.acquire(id, 0, LONG_LEASE_MS), { ok: false, reason: 'unknown' });
      t.equal(await store.release(id, randomUUID(), { offset: 10 }), false, 'release returns false');
      t.equal(await store.get(id), null, 'release created nothing');
      await store.health();
    });

    t.test('acquire checks the expected offset', async (t) => {
      const store = await open(t);
      const session = newSession({ offset: 1024, writerState: richState(1024) });
      await store.create(session);

      // "It fails with `offset` when `expectedOffset` is given and differs from the session's offset"
      const wrong = await store.acquire(session.id, 0, LONG_LEASE_MS);
      t.strictSame(wrong, { ok: false, reason: 'offset', session }, 'wrong offset: reason offset, with the current session');
      const beyond = await store.acquire(session.id, 2048, LONG_LEASE_MS);
      t.match(beyond, { ok: false, reason: 'offset' });

      // A failed acquire takes no lease.
      const right = await store.acquire(session.id, 1024, LONG_LEASE_MS);
      t.equal(right.ok, true, 'the right offset acquires');
      if (!right.ok) return;
      t.strictSame(right.session, session);
      t.type(right.token, 'string');
      t.ok(right.token.length >= 16, 'the token is not guessable');
      t.equal(await store.release(session.id, right.token, { offset: 1024, writerState: richState(1024) }), true);

      const any = await store.acquire(session.id, undefined, LONG_LEASE_MS);
      t.equal(any.ok, true, 'no expected offset: any offset acquires');
    });

    t.test('busy while leased', async (t) => {
      const store = await open(t);
      const session = newSession({ offset: 7 });
      await store.create(session);
      const first = await store.acquire(session.id, 7, LONG_LEASE_MS);
      t.equal(first.ok, true);
      if (!first.ok) return;

      // "and with `busy` while another unexpired lease is held"
      t.strictSame(await store.acquire(session.id, 7, LONG_LEASE_MS), { ok: false, reason: 'busy', session });
      t.strictSame(await store.acquire(session.id, undefined, LONG_LEASE_MS), { ok: false, reason: 'busy', session });
      // While a write is in flight the stored offset is about to change, so `busy` wins over `offset`.
      t.match(await store.acquire(session.id, 3, LONG_LEASE_MS), { ok: false, reason: 'busy' });
      t.strictSame(await store.get(session.id), session, 'get still works while leased');

      t.equal(await store.release(session.id, first.token, { offset: 7 }), true);
      const second = await store.acquire(session.id, 7, LONG_LEASE_MS);
      t.equal(second.ok, true, 'free again after release');
      if (second.ok) t.not(second.token, first.token, 'every lease has its own token');
    });

    t.test('an expired lease lets another request acquire; the old token is then stale', async (t) => {
      const store = await open(t);
      const session = newSession({ offset: 100, writerState: richState(100) });
      await store.create(session);
      const crashed = await store.acquire(session.id, 100, 300);
      t.equal(crashed.ok, true);
      if (!crashed.ok) return;
      t.match(await store.acquire(session.id, 100, LONG_LEASE_MS), { ok: false, reason: 'busy' });

      // "A lease expires after `leaseMs` (a crashed instance does not block an upload forever)."
      await sleep(500);
      const next = await store.acquire(session.id, 100, LONG_LEASE_MS);
      t.equal(next.ok, true, 'acquired after the lease ran out');
      if (!next.ok) return;
      t.not(next.token, crashed.token);

      // "`release` stores the update and frees the lease only while `token` still holds it; it returns false
      // otherwise (the lease expired and someone else took it), and then changes nothing."
      t.equal(await store.release(session.id, crashed.token, { offset: 999, writerState: richState(999) }), false);
      t.strictSame(await store.get(session.id), session, 'the stale release changed neither offset nor writer state');
      t.match(await store.acquire(session.id, undefined, LONG_LEASE_MS), { ok: false, reason: 'busy' }, 'nor freed the new lease');

      t.equal(await store.release(session.id, next.token, { offset: 200, writerState: richState(200) }), true);
      t.equal((await store.get(session.id))?.offset, 200);
    });

    t.test('release stores offset and writer state and frees the lease', async (t) => {
      const store = await open(t);
      const session = newSession();
      await store.create(session);
      const lease = await store.acquire(session.id, 0, LONG_LEASE_MS);
      t.equal(lease.ok, true);
      if (!lease.ok) return;

      const state = richState(65536);
      t.equal(await store.release(session.id, lease.token, { offset: 65536, writerState: state }), true);
      const after = await store.get(session.id);
      t.strictSame(after, { ...session, offset: 65536, writerState: state }, 'id, repository and startedAt kept');

      t.equal(
        await store.release(session.id, lease.token, { offset: 1, writerState: richState(1) }),
        false,
        'a released token no longer holds the lease',
      );
      t.strictSame(await store.get(session.id), after, 'and changed nothing');

      t.match(await store.acquire(session.id, 0, LONG_LEASE_MS), { ok: false, reason: 'offset', session: { offset: 65536 } });
      const again = await store.acquire(session.id, 65536, LONG_LEASE_MS);
      t.equal(again.ok, true, 'the next chunk acquires at the new offset');
      if (!again.ok) return;
      t.strictSame(again.session, after);

      // The update replaces the writer state: none given, none stored.
      t.equal(await store.release(session.id, again.token, { offset: 65536 }), true);
      const cleared = await store.get(session.id);
      t.strictSame(cleared, { ...session, offset: 65536 });
    });

    t.test('sessions expire ttlMs after create', async (t) => {
      const store = await open(t, 300);
      const session = newSession({ writerState: richState(1) });
      await store.create(session);
      t.strictSame(await store.get(session.id), session, 'there right after create');
      // "A session expires `ttlMs` after it was last created or released; `get` then returns null."
      await sleep(700);
      t.equal(await store.get(session.id), null, 'gone after the TTL');
      t.strictSame(await store.acquire(session.id, undefined, LONG_LEASE_MS), { ok: false, reason: 'unknown' });
    });

    t.test('release restarts the TTL', async (t) => {
      const store = await open(t, 1200);
      const session = newSession();
      await store.create(session);
      await sleep(700);
      const lease = await store.acquire(session.id, 0, LONG_LEASE_MS);
      t.equal(lease.ok, true);
      if (!lease.ok) return;
      t.equal(await store.release(session.id, lease.token, { offset: 10 }), true);
      await sleep(700);
      // 1400 ms after create, 700 ms after release.
      t.strictSame(await store.get(session.id), { ...session, offset: 10 }, 'alive: the TTL counts from the release');
      await sleep(900);
      t.equal(await store.get(session.id), null, 'gone once the TTL has passed since the release');
    });

    t.test('delete is idempotent', async (t) => {
      const store = await open(t);
      // "`delete` is idempotent."
      await store.delete(randomUUID());
      t.pass('deleting an unknown session resolves');

      const session = newSession({ writerState: richState(5) });
      await store.create(session);
      const lease = await store.acquire(session.id, 0, LONG_LEASE_MS);
      t.equal(lease.ok, true);
      await store.delete(session.id);
      t.equal(await store.get(session.id), null);
      await store.delete(session.id);
      t.pass('deleting twice resolves');
      t.strictSame(await store.acquire(session.id, undefined, LONG_LEASE_MS), { ok: false, reason: 'unknown' });
      if (lease.ok) {
        t.equal(await store.release(session.id, lease.token, { offset: 5 }), false, 'a lease on a deleted session cannot revive it');
        t.equal(await store.get(session.id), null);
      }
    });

    t.test('20 concurrent acquires: exactly one wins', async (t) => {
      const store = await open(t);
      const session = newSession({ offset: 512 });
      await store.create(session);
      // "`acquire` is atomic: of two concurrent acquires on one session at most one gets `ok: true`."
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => store.acquire(session.id, i % 2 === 0 ? 512 : undefined, LONG_LEASE_MS)),
      );
      t.equal(results.filter((r) => r.ok).length, 1, 'one ok');
      t.equal(results.filter((r) => !r.ok && r.reason === 'busy').length, 19, 'nineteen busy');
    });

    t.test('sessions are isolated by id', async (t) => {
      const store = await open(t);
      const a = newSession({ repository: 'team/a', offset: 10, writerState: richState(10) });
      const b = newSession({ repository: 'team/b', offset: 20, writerState: richState(20) });
      await store.create(a);
      await store.create(b);

      const leaseA = await store.acquire(a.id, 10, LONG_LEASE_MS);
      t.equal(leaseA.ok, true);
      if (!leaseA.ok) return;
      const leaseB = await store.acquire(b.id, 20, LONG_LEASE_MS);
      t.equal(leaseB.ok, true, 'a lease on one session does not make another busy');
      if (!leaseB.ok) return;
      t.equal(await store.release(b.id, leaseA.token, { offset: 1 }), false, "one session's token does not release another");

      t.equal(await store.release(a.id, leaseA.token, { offset: 30, writerState: richState(30) }), true);
      t.strictSame(await store.get(b.id), b, 'releasing one session leaves the other as it was');
      await store.delete(a.id);
      t.strictSame(await store.get(b.id), b, 'deleting one session leaves the other');
      t.equal(await store.release(b.id, leaseB.token, { offset: 25 }), true);
      t.equal((await store.get(b.id))?.offset, 25);
    });
  });
}
