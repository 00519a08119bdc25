/** Go-style durations as Distribution's config uses them: `168h`, `1h30m`, `90s`, `500ms`. Plain numbers are seconds. */
const UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds, or null when `input` is not a duration. */
export function parseDuration(input: unknown): number | null {
  if (typeof input === 'number' && Number.isFinite(input) && input >= 0) return input * 1000;
  if (typeof input !== 'string') return null;
  const s = input.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * (UNITS[m[2] ?? 's'] ?? 0);
    matched = re.lastIndex;
  }
  return matched === s.length && matched > 0 ? total : null;
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
