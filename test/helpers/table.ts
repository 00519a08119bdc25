/**
 * Helpers for table-driven tests of pure functions: a row per input, each outcome either a value or the
 * distribution error code the function throws.
 */

/** What a call did: returned a value, or threw an error with a distribution error code (or none). */
export type Outcome<T> = { value: T } | { code: string };

/** The distribution error code of a thrown error (`descriptor.code` or `code`), or `'(no code)'`. */
export function errorCode(err: unknown): string {
  if (typeof err === 'object' && err !== null) {
    const d = (err as { descriptor?: { code?: unknown } }).descriptor;
    if (d && typeof d.code === 'string') return d.code;
    const c = (err as { code?: unknown }).code;
    if (typeof c === 'string') return c;
  }
  return '(no code)';
}

/** Calls `fn` and records what it did. */
export function outcome<T>(fn: () => T): Outcome<T> {
  try {
    return { value: fn() };
  } catch (err) {
    return { code: errorCode(err) };
  }
}

/** A row label that shows control characters and cuts long inputs. */
export function label(input: unknown): string {
  const s = JSON.stringify(input) ?? String(input);
  return s.length > 80 ? `${s.slice(0, 60)}…(${s.length} chars)` : s;
}
