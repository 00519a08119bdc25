import type { Registry } from 'prom-client';
import { inertInstrument, type CounterInstrument } from '../metrics/instruments.js';

/** Per-endpoint queue state, read at scrape time. */
export type EventQueueStats = () => Promise<{ endpoint: string; pending: number; oldestQueuedAt: number | null }[]>;

/** The event delivery instruments (`endpoint` label = the endpoint's `name`). */
export interface EventMetrics {
  /** `berth_events_delivered_total{endpoint}`: events the endpoint accepted (2xx). */
  readonly delivered: CounterInstrument<'endpoint'>;
  /** `berth_events_failed_total{endpoint}`: delivery attempts that failed (error, timeout, non-2xx). */
  readonly failed: CounterInstrument<'endpoint'>;
  /** Sets where `berth_events_pending` and `berth_events_oldest_pending_age_seconds` read the queues from. */
  setQueueStats(stats: EventQueueStats): void;
}

/** Event metrics that record nothing: metrics off, or a command that only queues events (`berth gc`, `repo rm`). */
export const INERT_EVENT_METRICS: EventMetrics = {
  delivered: inertInstrument(),
  failed: inertInstrument(),
  setQueueStats: () => undefined,
};

/**
 * Registers the event instruments in `registry` (called where berth's metrics are built). prom-client is loaded
 * here, on first use, never by importing this module.
 */
export async function createEventMetrics(registry: Registry): Promise<EventMetrics> {
  const { Counter, Gauge } = await import('prom-client');
  const registers = [registry];
  let source: EventQueueStats | undefined;
  // One read of the queues per scrape feeds both gauges.
  let snapshot: Promise<Awaited<ReturnType<EventQueueStats>>> | undefined;
  const read = (): Promise<Awaited<ReturnType<EventQueueStats>>> => {
    if (!source) return Promise.resolve([]);
    snapshot ??= source()
      .catch(() => [])
      .finally(() => setTimeout(() => (snapshot = undefined), 0));
    return snapshot;
  };
  new Gauge({
    name: 'berth_events_pending',
    help: 'Events queued for a notification endpoint and not yet delivered.',
    labelNames: ['endpoint'] as const,
    registers,
    async collect() {
      this.reset();
      for (const s of await read()) this.set({ endpoint: s.endpoint }, s.pending);
    },
  });
  new Gauge({
    name: 'berth_events_oldest_pending_age_seconds',
    help: 'Age of the oldest event waiting for a notification endpoint (0 when none waits).',
    labelNames: ['endpoint'] as const,
    registers,
    async collect() {
      this.reset();
      const now = Date.now();
      for (const s of await read()) this.set({ endpoint: s.endpoint }, s.oldestQueuedAt === null ? 0 : Math.max(0, (now - s.oldestQueuedAt) / 1000));
    },
  });
  return {
    delivered: new Counter({
      name: 'berth_events_delivered_total',
      help: 'Events delivered to a notification endpoint (answered 2xx).',
      labelNames: ['endpoint'] as const,
      registers,
    }),
    failed: new Counter({
      name: 'berth_events_failed_total',
      help: 'Failed attempts to deliver an event to a notification endpoint (retried).',
      labelNames: ['endpoint'] as const,
      registers,
    }),
    setQueueStats(stats) {
      source = stats;
    },
  };
}
