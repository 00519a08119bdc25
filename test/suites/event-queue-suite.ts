import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Test } from 'tap';
import type { RegistryEvent } from '../../src/events/event.js';
import type { EventQueue } from '../../src/events/queue.js';

/**
 * Makes a queue on a fresh, empty backend namespace `ns`; calling it again with the same `ns` gives another handle on
 * the same queues (another process). The suite closes every queue it made.
 */
export type MakeEventQueue = (ns: string) => Promise<EventQueue>;

function event(n: number): RegistryEvent {
  return {
    id: randomUUID(),
    timestamp: new Date().toISOString(),
    action: 'push',
    target: { repository: 'a/b', digest: `sha256:${String(n).padStart(64, '0')}`, size: n, tag: `t"${n}"ü` },
    request: { id: `req-${n}`, addr: '127.0.0.1:1', host: 'h', method: 'PUT', useragent: 'suite' },
    actor: {},
    source: { addr: 'h:5000', instanceID: 'i' },
  };
}

/**
 * The `EventQueue` contract (src/events/queue.ts) against one implementation. `exclusiveClaims`: the backend
 * arbitrates claims between processes (Redis); the storage queue grants every claim.
 */
export async function eventQueueSuite(t: Test, name: string, make: MakeEventQueue, exclusiveClaims: boolean): Promise<void> {
  async function open(t: Test, ns: string): Promise<EventQueue> {
    const q = await make(ns);
    t.teardown(() => q.close());
    return q;
  }

  await t.test(`${name}: event queue contract`, async (t) => {
    t.test('entries come out in push order, whole, and stats count them', async (t) => {
      const q = await open(t, randomUUID());
      t.same(await q.stats('ep'), { pending: 0, oldestQueuedAt: null }, 'an unknown queue is empty');
      t.same(await q.peek('ep', 10), []);
      const before = Date.now();
      const events = Array.from({ length: 25 }, (_, i) => event(i));
      for (const e of events.slice(0, 5)) await q.push('ep', [e]);
      await q.push('ep', events.slice(5));
      const got = await q.peek('ep', 100);
      t.same(
        got.map((e) => e.event),
        events,
        'the same events, in order',
      );
      t.same(
        (await q.peek('ep', 3)).map((e) => e.event.id),
        events.slice(0, 3).map((e) => e.id),
        'peek takes from the head',
      );
      const stats = await q.stats('ep');
      t.equal(stats.pending, 25);
      t.ok(stats.oldestQueuedAt !== null && stats.oldestQueuedAt >= before - 1 && stats.oldestQueuedAt <= Date.now(), 'oldest queued at push time');
    });

    t.test('ack removes the delivered head; queues are independent', async (t) => {
      const q = await open(t, randomUUID());
      const events = Array.from({ length: 6 }, (_, i) => event(i));
      await q.push('one', events);
      await q.push('two', [event(100)]);
      t.ok(await q.claim('one', 60_000));
      const head = await q.peek('one', 2);
      t.equal(await q.ack('one', head), true);
      t.same(
        (await q.peek('one', 10)).map((e) => e.event.id),
        events.slice(2).map((e) => e.id),
      );
      t.equal((await q.stats('one')).pending, 4);
      t.equal((await q.stats('two')).pending, 1, 'the other queue is untouched');
      await q.ack('one', await q.peek('one', 10));
      t.same(await q.stats('one'), { pending: 0, oldestQueuedAt: null });
    });

    t.test('another handle on the same backend sees the queued events (what a restarted process finds)', async (t) => {
      const ns = randomUUID();
      const a = await open(t, ns);
      const events = [event(1), event(2)];
      await a.push('ep', events);
      await a.close();
      const b = await open(t, ns);
      t.same(
        (await b.peek('ep', 10)).map((e) => e.event),
        events,
      );
    });

    if (exclusiveClaims) {
      t.test('one claim holder per queue; released or expired claims pass on; a lost claim acks nothing', async (t) => {
        const ns = randomUUID();
        const a = await open(t, ns);
        const b = await open(t, ns);
        await a.push('ep', [event(1), event(2)]);
        t.equal(await a.claim('ep', 60_000), true, 'a claims');
        t.equal(await a.claim('ep', 60_000), true, 'a renews');
        t.equal(await b.claim('ep', 60_000), false, 'b cannot while a holds it');
        t.equal(await b.claim('other', 60_000), true, 'claims are per queue');
        const head = await b.peek('ep', 1);
        t.equal(await b.ack('ep', head), false, 'b, not holding the claim, cannot ack');
        t.equal((await a.stats('ep')).pending, 2, 'nothing removed');
        await a.release('ep');
        t.equal(await b.claim('ep', 200), true, 'b claims once a released it');
        await sleep(400);
        t.equal(await a.claim('ep', 60_000), true, "a takes over once b's claim ran out");
        t.equal(await b.ack('ep', head), false, 'b lost it');
        t.equal(await a.ack('ep', head), true);
        t.equal((await a.stats('ep')).pending, 1);
      });
    }
  });
}
