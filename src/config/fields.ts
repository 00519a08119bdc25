import { needsUnit, parseDuration } from './duration.js';

/**
 * Small typed readers for raw YAML sections. Each names the full key in its error, so a bad config stops startup
 * with a message like `storage.delete.enabled: expected a boolean, got "maybe"`.
 */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export type RawSection = Record<string, unknown>;

export function isSection(v: unknown): v is RawSection {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

/** A nested section (empty when absent); a scalar where a section belongs is an error. */
export function section(obj: RawSection, key: string, path: string): RawSection {
  const v = obj[key];
  if (v === undefined || v === null) return {};
  if (!isSection(v)) throw new ConfigError(`${path}${key}: expected a section, got ${show(v)}`);
  return v;
}

export function optString(obj: RawSection, key: string, path: string): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (typeof v !== 'string') throw new ConfigError(`${path}${key}: expected a string, got ${show(v)}`);
  return v;
}

export function str(obj: RawSection, key: string, path: string, fallback: string): string {
  return optString(obj, key, path) ?? fallback;
}

export function oneOf<T extends string>(obj: RawSection, key: string, path: string, allowed: readonly T[], fallback: T): T {
  const v = optString(obj, key, path) ?? fallback;
  if (!(allowed as readonly string[]).includes(v)) {
    throw new ConfigError(`${path}${key}: expected one of ${allowed.join(', ')}, got ${show(v)}`);
  }
  return v as T;
}

/**
 * The booleans of YAML 1.1 as registry:2's parser (Go's gopkg.in/yaml.v2, `resolve.go`) reads them. The `yaml`
 * package berth uses reads YAML 1.2, where `yes`/`on` are strings, so a registry:2 file with `enabled: yes` arrives
 * here as a string and is read the same way registry:2 reads it.
 */
const YAML11_BOOLEANS: ReadonlyMap<string, boolean> = new Map([
  ...['y', 'Y', 'yes', 'Yes', 'YES', 'true', 'True', 'TRUE', 'on', 'On', 'ON'].map((s) => [s, true] as const),
  ...['n', 'N', 'no', 'No', 'NO', 'false', 'False', 'FALSE', 'off', 'Off', 'OFF'].map((s) => [s, false] as const),
]);

/** A boolean value as registry:2 reads it (`true`, `yes`, `on`, ... ), or undefined when `v` is not one. */
export function yamlBoolean(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v;
  return typeof v === 'string' ? YAML11_BOOLEANS.get(v) : undefined;
}

export function bool(obj: RawSection, key: string, path: string, fallback: boolean): boolean {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  const b = yamlBoolean(v);
  if (b !== undefined) return b;
  throw new ConfigError(`${path}${key}: expected a boolean (true/false, yes/no, on/off), got ${show(v)}`);
}

export function int(obj: RawSection, key: string, path: string, fallback: number, min = 0): number {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  const n = typeof v === 'string' && /^-?\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < min) {
    throw new ConfigError(`${path}${key}: expected an integer >= ${min}, got ${show(v)}`);
  }
  return n;
}

/** A Go-style duration (`24h`, `90s`), returned in milliseconds. */
export function duration(obj: RawSection, key: string, path: string, fallbackMs: number): number {
  const v = obj[key];
  if (v === undefined || v === null || v === '') return fallbackMs;
  if (needsUnit(v)) throw new ConfigError(`${path}${key}: ${show(v)} needs a unit, e.g. ${show(v).replace(/"/g, '')}h (or s, m, ms)`);
  const ms = parseDuration(v);
  if (ms === null) throw new ConfigError(`${path}${key}: expected a duration such as 30s, 10m or 24h, got ${show(v)}`);
  return ms;
}

export function stringList(obj: RawSection, key: string, path: string): string[] {
  const v = obj[key];
  if (v === undefined || v === null) return [];
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    throw new ConfigError(`${path}${key}: expected a list of strings, got ${show(v)}`);
  }
  return v;
}

/**
 * Warns about keys of `obj` that are not in `known`; `ignored` keys are Distribution options berth accepts but does
 * not act on (they warn differently, so a registry:2 config still loads).
 */
export function checkKeys(
  obj: RawSection,
  path: string,
  known: readonly string[],
  warn: (msg: string) => void,
  ignored: readonly string[] = [],
): void {
  for (const key of Object.keys(obj)) {
    if (known.includes(key)) continue;
    if (ignored.includes(key)) warn(`${path}${key}: accepted for registry:2 compatibility but not used by berth`);
    else warn(`${path}${key}: unknown configuration key, ignored`);
  }
}
