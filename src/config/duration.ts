/**
 * Go-style durations as Distribution's config uses them: `168h`, `1h30m`, `90s`, `500ms`; a bare `0` is zero.
 * A number without a unit is not a duration: Go reads `age: 168` as 168 nanoseconds, which is never what was meant,
 * so berth refuses it ({@link needsUnit}).
 */
const UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Whether `input` is a non-zero number without a unit (`168`, `"90"`), which a duration setting refuses. */
export function needsUnit(input: unknown): boolean {
  if (typeof input === 'number') return input !== 0;
  return typeof input === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(input) && Number(input) !== 0;
}

/** Milliseconds, or null when `input` is not a duration (a number without a unit, other than 0, is not). */
export function parseDuration(input: unknown): number | null {
  if (input === 0) return 0;
  if (typeof input !== 'string') return null;
  const s = input.trim();
  if (/^0+(\.0+)?$/.test(s)) return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * (UNITS[m[2] ?? 's'] ?? 0);
    matched = re.lastIndex;
  }
  return matched === s.length && matched > 0 ? total : null;
}

/** The shortest Go-style spelling of `ms` (`24h`, `90m`, `30s`, `500ms`). */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
