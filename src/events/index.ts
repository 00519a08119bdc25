import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { StorageDriver } from '../storage/driver.js';
import { AuditLog } from './audit.js';
import { parseAuditConfig, parseNotifications } from './config.js';
import type { EventMetrics } from './metrics.js';
import type { EventQueue } from './queue.js';
import { RegistryEvents, type RegistryEventsOptions } from './registry-events.js';
import { StorageEventQueue } from './storage-queue.js';

export { AuditLog, type AuditActor } from './audit.js';
export { parseAuditConfig, parseNotifications, type EndpointConfig, type NotificationsConfig } from './config.js';
export { clientAddr, cliContext, GC_CONTEXT, type EventAction, type EventReference, type EventSubject, type RequestContext } from './event.js';
export { EventingNamespace } from './eventing-namespace.js';
export { createEventMetrics, type EventMetrics } from './metrics.js';
export { NO_EVENTS, RegistryEvents, type EventSink } from './registry-events.js';

/** What {@link createEvents} needs besides the config. */
export interface CreateEventsDeps {
  driver: StorageDriver;
  logger: Logger;
  metrics: EventMetrics;
  /** An audit log to share (the auth module writes to the same one); default: one from `berth.audit`. */
  audit?: AuditLog;
  /** Start delivery workers (`serve`); false for commands that only queue (`berth gc`, `berth repo rm`). Default true. */
  deliver?: boolean;
  /** `source.addr` comes from this listen address; default `http.addr`. Empty: the hostname alone (a command). */
  listenAddr?: string;
  delivery?: RegistryEventsOptions['delivery'];
}

/**
 * The events service the config asks for: queues in Redis when `redis.addr` is set, else in storage
 * (`/berth/events/` through the driver); no queue at all without enabled endpoints (the audit trail still works).
 */
export async function createEvents(config: Config, deps: CreateEventsDeps): Promise<RegistryEvents> {
  // Fails closed: a bad endpoint stops startup naming the key (ConfigError), as a bad `auth` section does.
  const warn = (m: string) => deps.logger.warn(m);
  const notifications = parseNotifications(config.notifications, warn);
  const enabled = notifications.endpoints.some((e) => !e.disabled);
  let queue: EventQueue | null = null;
  if (enabled) {
    if (config.redis) {
      // Loaded only when configured, as the session store does.
      const { RedisEventQueue } = await import('./redis-queue.js');
      queue = RedisEventQueue.connect(config.redis);
    } else {
      queue = new StorageEventQueue(deps.driver);
    }
  }
  return new RegistryEvents({
    notifications,
    queue,
    metrics: deps.metrics,
    logger: deps.logger,
    audit: deps.audit ?? new AuditLog(deps.logger, parseAuditConfig(config.raw, warn)),
    listenAddr: deps.listenAddr ?? config.http.addr,
    ...(deps.deliver === undefined ? {} : { deliver: deps.deliver }),
    ...(deps.delivery ? { delivery: deps.delivery } : {}),
  });
}
