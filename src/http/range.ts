/**
 * Parses a single-range `Range: bytes=...` request header against a resource of `size` bytes (RFC 9110 §14).
 * Returns null when there is no usable range (absent, not bytes, or several ranges: the full body is then served),
 * `'unsatisfiable'` when the range lies outside the resource (→ 416), else the inclusive byte positions.
 */
export function parseRangeHeader(header: string | undefined, size: number): { start: number; end: number } | null | 'unsatisfiable' {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return null;
  const [, first, last] = m as unknown as [string, string, string];
  if (first === '' && last === '') return null;
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(size - suffix, 0), end: size - 1 };
  }
  const start = Number(first);
  if (start >= size) return 'unsatisfiable';
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (end < start) return 'unsatisfiable';
  return { start, end };
}
