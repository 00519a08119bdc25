import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { AuditLog } from './audit.js';
import type { EndpointConfig, NotificationsConfig } from './config.js';
import { EndpointDelivery, type DeliveryOptions } from './delivery.js';
import { buildEvent, type EventAction, type EventSource, type EventSubject, type RegistryEvent, type RequestContext } from './event.js';
import type { EventMetrics } from './metrics.js';
import type { EventQueue } from './queue.js';

/**
 * The seam between the domain and the events service. The domain calls `emit` after a change or a read took
 * effect (a blob committed, a manifest stored, a tag removed, a blob served, a gc deletion), passing the request
 * context down from the HTTP layer. `emit` never rejects: a queue failure is logged, the registry operation stands.
 * It resolves once the events are queued durably.
 */
export interface EventSink {
  emit(action: EventAction, subject: EventSubject, ctx: RequestContext): Promise<void>;
  /**
   * Whether an `action` event would be kept (queued for an endpoint or written to the audit trail): when not, the
   * caller may skip building it. Pulls are the common case (every manifest and blob GET) and are often wanted by
   * nobody.
   */
  wants(action: EventAction): boolean;
}

/** A sink that does nothing (tests, commands that change nothing). */
export const NO_EVENTS: EventSink = { emit: async () => undefined, wants: () => false };

/** What {@link RegistryEvents} is built from. */
export interface RegistryEventsOptions {
  notifications: NotificationsConfig;
  /** The durable queue; required when any endpoint is enabled. */
  queue: EventQueue | null;
  metrics: EventMetrics;
  logger: Logger;
  audit: AuditLog;
  /** `host:port` berth listens on (`http.addr`), for `source.addr`; empty in a command (no port). */
  listenAddr: string;
  /** Also deliver (start workers); false in processes that only queue (`berth gc`). Default true. */
  deliver?: boolean;
  delivery?: DeliveryOptions;
}

/** registry:2's `source.addr`: the machine's hostname and the listen port (the hostname alone for a command). */
function sourceAddr(listenAddr: string): string {
  if (listenAddr === '') return hostname();
  const port = /:(\d+)$/.exec(listenAddr)?.[1] ?? listenAddr;
  return `${hostname()}:${port}`;
}

/** The audit action of an event, or null for events that change nothing (pulls, blob pushes). */
function auditAction(action: EventAction, subject: EventSubject, ctx: RequestContext): string | null {
  if (action === 'push') return subject.kind === 'manifest' ? 'manifest push' : null;
  if (action === 'mount') return 'blob mount';
  if (action !== 'delete') return null;
  if (ctx.origin === 'gc') return 'gc delete';
  if (subject.tag) return 'tag delete';
  if (!subject.digest) return 'repository delete';
  return subject.kind === 'blob' ? 'blob delete' : 'manifest delete';
}

/**
 * The events service: builds registry:2 events, writes the audit trail, filters per endpoint and queues durably;
 * one {@link EndpointDelivery} per enabled endpoint sends them.
 */
export class RegistryEvents implements EventSink {
  private readonly endpoints: EndpointConfig[];
  private readonly workers = new Map<string, EndpointDelivery>();
  private readonly source: EventSource;
  private started = false;

  constructor(private readonly options: RegistryEventsOptions) {
    this.endpoints = options.notifications.endpoints.filter((e) => !e.disabled);
    this.source = { addr: sourceAddr(options.listenAddr), instanceID: crypto.randomUUID() };
    if (this.endpoints.length > 0 && !options.queue) throw new Error('an event queue is required with notification endpoints');
    const queue = options.queue;
    if (queue) {
      options.metrics.setQueueStats(async () =>
        Promise.all(this.endpoints.map(async (e) => ({ endpoint: e.name, ...(await queue.stats(e.queueName)) }))),
      );
      if (options.deliver ?? true) {
        for (const e of this.endpoints) {
          this.workers.set(e.name, new EndpointDelivery(e, queue, options.metrics, options.logger.child({ component: 'events' }), options.delivery));
        }
      }
    }
  }

  /** The endpoints events are queued for. */
  get enabledEndpoints(): readonly EndpointConfig[] {
    return this.endpoints;
  }

  wants(action: EventAction): boolean {
    // The audit trail records pushes, mounts and deletes (auditAction), never pulls.
    if (action !== 'pull') return true;
    return this.options.queue !== null && this.endpoints.some((e) => !e.ignoredActions.includes(action));
  }

  /** Starts delivering (workers for every enabled endpoint). */
  start(): void {
    if (this.started) return;
    this.started = true;
    for (const w of this.workers.values()) w.start();
  }

  async emit(action: EventAction, subject: EventSubject, ctx: RequestContext): Promise<void> {
    const audit = auditAction(action, subject, ctx);
    if (audit) {
      const details: Record<string, unknown> = { repository: subject.repository };
      if (subject.digest) details.digest = subject.digest;
      if (subject.tag) details.tag = subject.tag;
      if (subject.fromRepository) details.from = subject.fromRepository;
      if (audit === 'gc delete' && subject.kind) details.kind = subject.kind;
      this.options.audit.record(audit, { user: ctx.user, addr: ctx.addr, requestId: ctx.id, origin: ctx.origin }, details);
    }
    const queue = this.options.queue;
    if (!queue || this.endpoints.length === 0) return;
    let event: RegistryEvent;
    try {
      event = buildEvent(action, subject, ctx, this.source, { includeReferences: this.options.notifications.includeReferences });
    } catch (err) {
      this.options.logger.error({ err }, 'could not build event');
      return;
    }
    const mediaType = typeof event.target.mediaType === 'string' ? event.target.mediaType : undefined;
    await Promise.all(
      this.endpoints.map(async (e) => {
        if (e.ignoredActions.includes(action)) return;
        if (mediaType !== undefined && e.ignoredMediaTypes.includes(mediaType)) return;
        try {
          await queue.push(e.queueName, [event]);
        } catch (err) {
          this.options.logger.error({ endpoint: e.name, err: (err as Error).message, event: event.id, action }, 'event lost: could not queue it');
          return;
        }
        this.workers.get(e.name)?.wake();
      }),
    );
  }

  /** Stops delivery (after the requests in flight) and closes the queue; queued events stay for the next start. */
  async close(): Promise<void> {
    await Promise.all([...this.workers.values()].map((w) => w.stop()));
    await this.options.queue?.close();
    this.options.audit.close();
  }
}
