import { randomBytes } from 'node:crypto';
import { isNotFound, type StorageDriver } from '../storage/driver.js';
import type { RegistryEvent } from './event.js';
import type { EventQueue, QueuedEvent } from './queue.js';

/**
 * Event queues in the registry's storage, through the driver (filesystem or S3), one small file per event:
 *
 * ```
 * /berth/events/
 *   <queue>/                                 one folder per endpoint (EndpointConfig.queueName)
 *     <ms, 15 digits>-<seq, 10 digits>-<instance>.json   {"queuedAt": ms, "event": {...}}
 * ```
 * Names sort in push order (a process never reuses or goes back on a `ms-seq` pair). Every file is written
 * atomically by `putContent`, so an event is either fully queued or not at all, and a `kill -9` after `push`
 * resolved loses nothing. Delivered events are deleted. There is no cross-process claim: without Redis, one
 * process delivers (replicas sharing storage should share Redis too; otherwise they may each send an event).
 */
export class StorageEventQueue implements EventQueue {
  readonly kind = 'storage';
  private lastMs = 0;
  private seq = 0;
  private readonly instance = randomBytes(4).toString('hex');

  constructor(
    private readonly driver: StorageDriver,
    private readonly root = '/berth/events',
  ) {}

  private dir(queue: string): string {
    return `${this.root}/${queue}`;
  }

  private nextName(): { name: string; ms: number } {
    const ms = Math.max(Date.now(), this.lastMs);
    if (ms !== this.lastMs) this.seq = 0;
    this.lastMs = ms;
    this.seq += 1;
    return { name: `${String(ms).padStart(15, '0')}-${String(this.seq).padStart(10, '0')}-${this.instance}.json`, ms };
  }

  async push(queue: string, events: RegistryEvent[]): Promise<void> {
    for (const event of events) {
      const { name, ms } = this.nextName();
      await this.driver.putContent(`${this.dir(queue)}/${name}`, Buffer.from(JSON.stringify({ queuedAt: ms, event })));
    }
  }

  async claim(): Promise<boolean> {
    return true;
  }

  async release(): Promise<void> {}

  private async names(queue: string): Promise<string[]> {
    let paths: string[];
    try {
      paths = await this.driver.list(this.dir(queue));
    } catch (err) {
      if (isNotFound(err)) return [];
      throw err;
    }
    return paths
      .map((p) => p.slice(p.lastIndexOf('/') + 1))
      .filter((n) => /^\d{15}-\d{10}-[0-9a-f]+\.json$/.test(n))
      .sort();
  }

  async peek(queue: string, max: number): Promise<QueuedEvent[]> {
    const out: QueuedEvent[] = [];
    for (const name of (await this.names(queue)).slice(0, max)) {
      let raw: Buffer;
      try {
        raw = await this.driver.getContent(`${this.dir(queue)}/${name}`);
      } catch (err) {
        if (isNotFound(err)) continue;
        throw err;
      }
      const parsed = JSON.parse(raw.toString('utf8')) as { queuedAt: number; event: RegistryEvent };
      out.push({ handle: name, queuedAt: parsed.queuedAt, event: parsed.event });
    }
    return out;
  }

  async ack(queue: string, entries: QueuedEvent[]): Promise<boolean> {
    for (const e of entries) {
      try {
        await this.driver.delete(`${this.dir(queue)}/${e.handle}`);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    return true;
  }

  async stats(queue: string): Promise<{ pending: number; oldestQueuedAt: number | null }> {
    const names = await this.names(queue);
    const first = names[0];
    return { pending: names.length, oldestQueuedAt: first === undefined ? null : Number(first.slice(0, 15)) };
  }

  async close(): Promise<void> {}
}
