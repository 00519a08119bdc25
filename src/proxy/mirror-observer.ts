/** What a mirrored request was for, as counted in the cache metrics. */
export type MirrorContentKind = 'manifest' | 'blob';

/**
 * What the pull-through cache reports as it works, per upstream (by its name). The app turns these into Prometheus
 * instruments (`http/metrics.ts`); without one, nothing is recorded. Implementations must not throw.
 */
export interface MirrorObserver {
  /** A manifest or blob request answered from local storage. */
  hit(upstream: string, kind: MirrorContentKind): void;
  /** A manifest or blob request that needed the upstream (a fill it started or joined, a fetched manifest). */
  miss(upstream: string, kind: MirrorContentKind): void;
  /** Body bytes received from the upstream (manifests and blob fills). */
  fetchedBytes(upstream: string, bytes: number): void;
  /** Bytes of cached content sent to clients. */
  servedBytes(upstream: string, bytes: number): void;
  /** An upstream request that failed (network, timeout, 429, 5xx, broken transfer). */
  upstreamError(upstream: string): void;
  /** A blob fill from this upstream started (+1) or ended (-1). */
  fills(upstream: string, delta: 1 | -1): void;
  /** The upstream's rate limit as its last answer declared it (Docker Hub's `ratelimit-limit`/`-remaining`). */
  rateLimit(upstream: string, limit: number, remaining: number): void;
}

/** An observer recording nothing. */
export const NO_OBSERVER: MirrorObserver = {
  hit: () => undefined,
  miss: () => undefined,
  fetchedBytes: () => undefined,
  servedBytes: () => undefined,
  upstreamError: () => undefined,
  fills: () => undefined,
  rateLimit: () => undefined,
};

/**
 * The count of a Docker Hub rate-limit header: `100;w=21600` (100 pulls per 21600 s window) → 100. Returns undefined
 * for a missing or malformed header.
 */
export function rateLimitCount(header: string | null): number | undefined {
  if (header === null) return undefined;
  const m = /^\s*(\d+)/.exec(header);
  return m ? Number(m[1]) : undefined;
}
