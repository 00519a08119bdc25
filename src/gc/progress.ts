import type { Logger } from 'pino';

/** Where long housekeeping runs report how far they are. */
export interface ProgressSink {
  /** Starts a phase (`total` items or bytes when known). */
  start(phase: string, total?: number, unit?: 'items' | 'bytes'): void;
  /** `n` more items (or bytes) of the current phase are done. */
  tick(n?: number): void;
  /** The current phase is finished. */
  done(): void;
}

/** Reports nothing (library use, tests, the scheduled gc). */
export const noProgress: ProgressSink = { start() {}, tick() {}, done() {} };

/** `1.5 GB`-style sizes (powers of 1000, like `docker system df`). */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${n} B` : `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}

/**
 * A progress bar redrawn in place on a terminal (`stream.isTTY`), otherwise one log line per `intervalMs` and one
 * when a phase ends, so a run under cron or in a container log still shows it is moving.
 */
export function createProgress(
  stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number },
  logger?: Logger,
  intervalMs = 10_000,
): ProgressSink {
  let phase = '';
  let total: number | undefined;
  let unit: 'items' | 'bytes' = 'items';
  let count = 0;
  let startedAt = 0;
  let lastDraw = 0;
  const tty = stream.isTTY === true;
  const show = (n: number) => (unit === 'bytes' ? formatBytes(n) : String(n));
  const line = (): string => {
    if (total === undefined || total === 0) return `${phase}: ${show(count)}`;
    const width = 30;
    const fraction = Math.min(1, count / total);
    const filled = Math.round(fraction * width);
    return `${phase} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${Math.floor(fraction * 100)}% ${show(count)}/${show(total)}`;
  };
  const draw = (force: boolean) => {
    const now = Date.now();
    if (tty) {
      if (!force && now - lastDraw < 100) return;
      lastDraw = now;
      const columns = stream.columns !== undefined && stream.columns >= 20 ? stream.columns : 100;
      stream.write(`\r\x1b[K${line().slice(0, Math.max(10, columns - 1))}`);
    } else if (logger && (force || now - lastDraw >= intervalMs)) {
      lastDraw = now;
      logger.info({ phase, done: count, total, unit }, 'progress');
    }
  };
  return {
    start(p, t, u = 'items') {
      phase = p;
      total = t;
      unit = u;
      count = 0;
      startedAt = Date.now();
      lastDraw = tty ? 0 : startedAt;
      if (tty) draw(true);
    },
    tick(n = 1) {
      count += n;
      draw(false);
    },
    done() {
      if (tty) stream.write('\r\x1b[K');
      else if (logger && Date.now() - startedAt >= intervalMs) draw(true);
    },
  };
}
