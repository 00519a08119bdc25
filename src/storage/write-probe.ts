import { randomUUID } from 'node:crypto';
import type { StorageDriver } from './driver.js';

/** How long one probe's result is reused, so readiness checks do not write on every request. */
const DEFAULT_TTL_MS = 5000;

/**
 * Readiness of storage for writes: creates and deletes a small file under the root (`/berth/write-probe-<uuid>`),
 * reusing the outcome for a few seconds. A full disk (ENOSPC) or a read-only mount (EROFS) fails it, so `/readyz`
 * says so while reads still work.
 */
export class WriteProbe {
  private last: { at: number; error?: Error } | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly driver: StorageDriver,
    private readonly ttlMs: number = DEFAULT_TTL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Resolves when storage took a write within the last `ttlMs`; else rejects with why it did not. */
  async check(): Promise<void> {
    if (this.last === undefined || this.now() - this.last.at >= this.ttlMs) {
      this.running ??= this.probe().finally(() => {
        this.running = undefined;
      });
      await this.running;
    }
    if (this.last?.error) throw this.last.error;
  }

  private async probe(): Promise<void> {
    const path = `/berth/write-probe-${randomUUID()}`;
    try {
      await this.driver.putContent(path, Buffer.from('ok'));
      await this.driver.delete(path);
      this.last = { at: this.now() };
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const reason =
        code === 'ENOSPC' ? 'no space left' : code === 'EROFS' ? 'read-only' : code === 'EDQUOT' ? 'quota exceeded' : (err as Error).message;
      this.last = { at: this.now(), error: new Error(`not writable: ${reason}`) };
      await this.driver.delete(path).catch(() => undefined);
    }
  }
}
