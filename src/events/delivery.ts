import type { Logger } from 'pino';
import type { EndpointConfig } from './config.js';
import { envelope, EVENTS_MEDIA_TYPE } from './event.js';
import type { EventMetrics } from './metrics.js';
import type { EventQueue } from './queue.js';

/** Options of {@link EndpointDelivery}. */
export interface DeliveryOptions {
  /** How often an idle worker looks for events queued by other processes; default 1 s. */
  pollMs?: number;
}

/** Why a POST was not accepted. */
class DeliveryError extends Error {}

/**
 * Delivers one endpoint's queue, in order, one event per request (as registry:2 sends them), until stopped.
 * An event leaves the queue only after the endpoint answered 2xx or 3xx; on a failure the same event is retried: at once
 * while fewer than `threshold` attempts in a row failed, then every `backoff` (registry:2's retrying sink).
 */
export class EndpointDelivery {
  private stopped = false;
  private wakeUp: (() => void) | undefined;
  private woken = false;
  private loop: Promise<void> | undefined;
  private failures = 0;
  private readonly pollMs: number;
  private readonly claimTtlMs: number;

  constructor(
    private readonly endpoint: EndpointConfig,
    private readonly queue: EventQueue,
    private readonly metrics: EventMetrics,
    private readonly logger: Logger,
    options: DeliveryOptions = {},
  ) {
    this.pollMs = options.pollMs ?? 1000;
    // Longer than an attempt and a backoff, so a live holder renews it in time.
    this.claimTtlMs = Math.max(10_000, 3 * (endpoint.timeoutMs + endpoint.backoffMs));
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** New events were queued: look now instead of at the next poll. */
  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /** Stops after the request in flight (if any) and gives the queue's claim up. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeUp?.();
    await this.loop;
    try {
      await this.queue.release(this.endpoint.queueName);
    } catch {
      // it runs out by itself
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.woken && this.failures === 0) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wakeUp = () => {
        this.wakeUp = undefined;
        // A wake-up does not cut a backoff short.
        if (this.failures === 0 || this.stopped) done();
      };
    });
  }

  private async run(): Promise<void> {
    const { queueName } = this.endpoint;
    while (!this.stopped) {
      this.woken = false;
      let wait = this.pollMs;
      try {
        if (await this.queue.claim(queueName, this.claimTtlMs)) {
          const batch = await this.queue.peek(queueName, 50);
          for (const entry of batch) {
            if (this.stopped) break;
            try {
              await this.post(envelope([entry.event]));
            } catch (err) {
              this.failures += 1;
              this.metrics.failed.inc({ endpoint: this.endpoint.name });
              wait = this.failures >= this.endpoint.threshold ? this.endpoint.backoffMs : 10;
              if (this.failures === this.endpoint.threshold) {
                this.logger.warn(
                  { endpoint: this.endpoint.name, err: (err as Error).message, failures: this.failures },
                  'event delivery failing; backing off',
                );
              }
              break;
            }
            if (this.failures >= this.endpoint.threshold) this.logger.info({ endpoint: this.endpoint.name }, 'event delivery recovered');
            this.failures = 0;
            this.metrics.delivered.inc({ endpoint: this.endpoint.name });
            if (!(await this.queue.ack(queueName, [entry]))) break;
          }
          // Something was delivered: look for more right away.
          if (this.failures === 0 && batch.length > 0) wait = 0;
        }
      } catch (err) {
        this.logger.warn({ endpoint: this.endpoint.name, err: (err as Error).message }, 'event queue unavailable');
        wait = Math.max(this.pollMs, 1000);
      }
      if (wait > 0 || this.stopped) await this.sleep(wait);
    }
  }

  private async post(body: string): Promise<void> {
    const headers = new Headers();
    for (const [k, values] of Object.entries(this.endpoint.headers)) for (const v of values) headers.append(k, v);
    headers.set('Content-Type', EVENTS_MEDIA_TYPE);
    const res = await fetch(this.endpoint.url, {
      method: 'POST',
      headers,
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(this.endpoint.timeoutMs),
    });
    // Drain so the connection is reused.
    await res.arrayBuffer().catch(() => undefined);
    // registry:2 counts 2xx and 3xx answers as delivered.
    if (res.status < 200 || res.status >= 400) throw new DeliveryError(`endpoint answered ${res.status}`);
  }
}
