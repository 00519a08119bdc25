import type { RegistryEvent } from './event.js';

/** An event waiting in an endpoint's queue. */
export interface QueuedEvent {
  /** The queue's own handle for the entry (a file name, a list position); opaque to callers. */
  handle: string;
  /** When it was queued (ms since the epoch), for the oldest-pending-age metric. */
  queuedAt: number;
  event: RegistryEvent;
}

/**
 * The seam of durable per-endpoint event queues (`test/suites/event-queue-suite.ts` runs against each).
 *
 * Contract:
 * - `push` resolves once the events are durable: a process killed (-9) right after still has them queued.
 * - Entries come out of `peek` in the order they were pushed (per queue, per process; across processes sharing the
 *   queue, in the order the pushes reached the backend).
 * - Only the holder of a queue's claim delivers and `ack`s; a claim lasts `ttlMs` unless renewed by claiming again,
 *   so a crashed holder's queue is taken over. `ack` removes exactly the given entries from the head of the queue
 *   and returns false (removing nothing) when the claim was lost meanwhile.
 */
export interface EventQueue {
  /** `storage` or `redis`. */
  readonly kind: string;
  push(queue: string, events: RegistryEvent[]): Promise<void>;
  /** Takes or renews the right to deliver `queue` for `ttlMs`; true when this process holds it. */
  claim(queue: string, ttlMs: number): Promise<boolean>;
  /** Gives the claim up (shutdown), if held. */
  release(queue: string): Promise<void>;
  /** Up to `max` entries from the head, oldest first. */
  peek(queue: string, max: number): Promise<QueuedEvent[]>;
  /** Removes delivered entries (the first ones `peek` returned, in order). */
  ack(queue: string, entries: QueuedEvent[]): Promise<boolean>;
  /** How many entries wait, and when the oldest was queued (null when none). */
  stats(queue: string): Promise<{ pending: number; oldestQueuedAt: number | null }>;
  close(): Promise<void>;
}
