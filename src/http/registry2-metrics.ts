import type { IncomingMessage } from 'node:http';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { matchRoute } from './route-match.js';

/**
 * registry:2's own HTTP series (`registry_http_*`), with its names, label names, types and buckets, so dashboards
 * built for CNCF Distribution keep working against berth. Recorded beside berth's `berth_http_*` series.
 */
export interface Registry2Metrics {
  /** `registry_http_requests_total{code,handler,method}` (counter). */
  readonly requests: Counter<'code' | 'handler' | 'method'>;
  /** `registry_http_request_duration_seconds{handler,method}` (histogram). */
  readonly duration: Histogram<'handler' | 'method'>;
  /** `registry_http_in_flight_requests{handler}` (gauge). */
  readonly inFlight: Gauge<'handler'>;
  /** `registry_http_request_size_bytes{handler}` (histogram): approximate request size, headers included. */
  readonly requestSize: Histogram<'handler'>;
  /** `registry_http_response_size_bytes{handler}` (histogram): response body bytes written. */
  readonly responseSize: Histogram<'handler'>;
}

/**
 * berth's route kinds (`request.routeKind`) and the registry:2 `handler` label each one counts as. Kinds absent here
 * (berth's own API, referrers, metrics) have no registry:2 counterpart and are not recorded in these series.
 */
export const REGISTRY2_HANDLERS: Readonly<Record<string, string>> = {
  base: 'base',
  catalog: 'catalog',
  tags: 'tags',
  manifest: 'manifest',
  blob: 'blob',
  'upload-start': 'blob_upload',
  upload: 'blob_upload_chunk',
};

/** registry:2's latency buckets (seconds). */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60];
/** registry:2's size buckets: 1 KiB doubling up to 2 GiB. */
const SIZE_BUCKETS = Array.from({ length: 22 }, (_, i) => 1024 * 2 ** i);

/** Creates registry:2's HTTP instruments in `registry`. */
export function createRegistry2Metrics(registry: Registry): Registry2Metrics {
  const registers = [registry];
  return {
    requests: new Counter({
      name: 'registry_http_requests_total',
      help: 'Total number of HTTP requests made.',
      labelNames: ['code', 'handler', 'method'] as const,
      registers,
    }),
    duration: new Histogram({
      name: 'registry_http_request_duration_seconds',
      help: 'The HTTP request latencies in seconds.',
      labelNames: ['handler', 'method'] as const,
      buckets: DURATION_BUCKETS,
      registers,
    }),
    inFlight: new Gauge({
      name: 'registry_http_in_flight_requests',
      help: 'The in-flight HTTP requests',
      labelNames: ['handler'] as const,
      registers,
    }),
    requestSize: new Histogram({
      name: 'registry_http_request_size_bytes',
      help: 'The HTTP request sizes in bytes.',
      labelNames: ['handler'] as const,
      buckets: SIZE_BUCKETS,
      registers,
    }),
    responseSize: new Histogram({
      name: 'registry_http_response_size_bytes',
      help: 'The HTTP response sizes in bytes.',
      labelNames: ['handler'] as const,
      buckets: SIZE_BUCKETS,
      registers,
    }),
  };
}

/**
 * A request's approximate size as registry:2 (Prometheus' Go instrumentation) counts it: URL, method, protocol,
 * header names and values, host, plus the declared body length.
 */
export function approximateRequestSize(req: IncomingMessage): number {
  let size = (req.url ?? '').length + (req.method ?? '').length + `HTTP/${req.httpVersion}`.length;
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    if (name.toLowerCase() === 'host') continue;
    size += name.length + (raw[i + 1] ?? '').length;
  }
  size += (req.headers.host ?? '').length;
  const length = Number(req.headers['content-length']);
  if (Number.isFinite(length) && length >= 0) size += length;
  return size;
}

/**
 * The registry:2 `handler` label of a request URL (path and query), null for requests registry:2 has no route for
 * (those are not recorded in its series, as registry:2 does not record them either).
 */
export function registry2Handler(url: string): string | null {
  const rawPath = url.split('?')[0] ?? '/';
  try {
    const route = matchRoute(rawPath === '/v2' ? '/v2/' : rawPath);
    return route ? (REGISTRY2_HANDLERS[route.kind] ?? null) : null;
  } catch {
    return null;
  }
}
