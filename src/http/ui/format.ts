import { html, type Html } from './html.js';

/**
 * Human-readable values for the UI, each with its exact value in a `title` (shown on hover): sizes in binary units,
 * times relative to now (the browser script keeps them current), short digests.
 */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** `1536` → `1.5 KiB`. */
export function humanSize(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '—';
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${UNITS[u]}`;
}

/** A size with the exact byte count in its title. */
export function sizeCell(bytes: number | null | undefined): Html {
  if (bytes === null || bytes === undefined) return html`<span class="muted">—</span>`;
  return html`<span title="${bytes.toLocaleString('en-US')} bytes">${humanSize(bytes)}</span>`;
}

/** `3 minutes ago`, `in 2 days`. */
export function relativeTime(iso: string, now: number = Date.now()): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.round((now - t) / 1000);
  const abs = Math.abs(s);
  const steps: Array<[number, string]> = [
    [60, 'second'],
    [3600, 'minute'],
    [86_400, 'hour'],
    [2_592_000, 'day'],
    [31_536_000, 'month'],
    [Infinity, 'year'],
  ];
  const divisors = [1, 60, 3600, 86_400, 2_592_000, 31_536_000];
  let i = 0;
  while (abs >= (steps[i] as [number, string])[0]) i++;
  if (i === 0 && abs < 10) return 'just now';
  const n = Math.floor(abs / (divisors[i] as number));
  const unit = `${(steps[i] as [number, string])[1]}${n === 1 ? '' : 's'}`;
  return s >= 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
}

/** A `<time>` element: relative text, the exact time in `datetime` and `title`. */
export function timeCell(iso: string | null | undefined): Html {
  if (!iso) return html`<span class="muted">—</span>`;
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return html`<span>${iso}</span>`;
  const exact = new Date(t).toISOString();
  return html`<time datetime="${exact}" title="${exact}">${relativeTime(exact)}</time>`;
}

/** `sha256:0123456789ab` (12 hex digits), full digest in the title. */
export function shortDigest(digest: string): Html {
  const i = digest.indexOf(':');
  const short = i >= 0 ? `${digest.slice(0, i + 1)}${digest.slice(i + 1, i + 13)}` : digest.slice(0, 19);
  return html`<code title="${digest}">${short}</code>`;
}
