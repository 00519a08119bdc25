/** What a mirrored request was for, as counted in the cache metrics. */
export type MirrorContentKind = 'manifest' | 'blob';

/**
 * What the pull-through cache reports as it works, per upstream (by its name). {@link MirrorStats} records them: the
 * one count that `/readyz`, the UI's mirror page and the Prometheus metrics read (through `PullThrough.upstreams()`).
 * Implementations must not throw.
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
}

/** An observer recording nothing. */
export const NO_OBSERVER: MirrorObserver = {
  hit: () => undefined,
  miss: () => undefined,
  fetchedBytes: () => undefined,
  servedBytes: () => undefined,
  upstreamError: () => undefined,
  fills: () => undefined,
};

/** What one upstream's cache did since this process started. */
export interface MirrorCounts {
  /** Manifest and blob GETs answered from local storage. */
  hits: Record<MirrorContentKind, number>;
  /** Manifest and blob GETs that needed the upstream. */
  misses: Record<MirrorContentKind, number>;
  /** Body bytes received from the upstream. */
  fetchedBytes: number;
  /** Bytes of cached content sent to clients. */
  servedBytes: number;
  /** Upstream requests that failed. */
  upstreamErrors: number;
  /** Blob fills from the upstream running now. */
  fillsInProgress: number;
}

function zero(): MirrorCounts {
  return { hits: { manifest: 0, blob: 0 }, misses: { manifest: 0, blob: 0 }, fetchedBytes: 0, servedBytes: 0, upstreamErrors: 0, fillsInProgress: 0 };
}

/** The observer that counts: every report of the cache lands here once, per upstream. */
export class MirrorStats implements MirrorObserver {
  private readonly byUpstream = new Map<string, MirrorCounts>();

  private of(upstream: string): MirrorCounts {
    let c = this.byUpstream.get(upstream);
    if (!c) {
      c = zero();
      this.byUpstream.set(upstream, c);
    }
    return c;
  }

  /** A copy of `upstream`'s counts (zeros when it reported nothing yet). */
  counts(upstream: string): MirrorCounts {
    const c = this.byUpstream.get(upstream) ?? zero();
    return { ...c, hits: { ...c.hits }, misses: { ...c.misses } };
  }

  hit(upstream: string, kind: MirrorContentKind): void {
    this.of(upstream).hits[kind]++;
  }

  miss(upstream: string, kind: MirrorContentKind): void {
    this.of(upstream).misses[kind]++;
  }

  fetchedBytes(upstream: string, bytes: number): void {
    this.of(upstream).fetchedBytes += bytes;
  }

  servedBytes(upstream: string, bytes: number): void {
    this.of(upstream).servedBytes += bytes;
  }

  upstreamError(upstream: string): void {
    this.of(upstream).upstreamErrors++;
  }

  fills(upstream: string, delta: 1 | -1): void {
    this.of(upstream).fillsInProgress += delta;
  }
}

/**
 * The count of a Docker Hub rate-limit header: `100;w=21600` (100 pulls per 21600 s window) → 100. Returns undefined
 * for a missing or malformed header.
 */
export function rateLimitCount(header: string | null): number | undefined {
  if (header === null) return undefined;
  const m = /^\s*(\d+)/.exec(header);
  return m ? Number(m[1]) : undefined;
}
