import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Counter, Gauge } from 'prom-client';
import type { Config } from '../config/config.js';
import { parseListenAddress } from '../config/config.js';
import { bool, ConfigError, isSection, optString, str } from '../config/fields.js';
import { createEventMetrics, INERT_EVENT_METRICS, type EventMetrics } from '../events/metrics.js';
import { inertInstrument, type CounterInstrument, type GaugeInstrument } from '../metrics/instruments.js';
import type { MirrorCounts } from '../proxy/mirror-observer.js';
import type { MirrorUpstreamStatus } from '../proxy/pull-through.js';
import { abandonedRequests, CLIENT_CLOSED_STATUS } from './abandoned-requests.js';
import {
  approximateRequestSize,
  createRegistry2Metrics,
  inertRegistry2Metrics,
  REGISTRY2_HANDLERS,
  registry2Text,
  type Registry2Metrics,
} from './registry2-metrics.js';
import { CounterSeries, DISCARD, HistogramSeries, type Cell, type HistogramCell, type SeriesRegistry } from './request-series.js';

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * A low-cardinality name for what the request does (`blob`, `manifest`, `upload`, ...), set by the routes.
     * The metrics use it as the `route` label; without it they fall back to the route pattern.
     */
    routeKind?: string;
  }
}

/** Labels of the per-request instruments. Kept small: each combination is a time series. */
type RequestLabels = 'method' | 'route' | 'status';

/** What renders the text exposition: prom-client's `Registry` (structurally; nothing here loads prom-client). */
export interface Exposition {
  /** The text format of every series. */
  metrics(): Promise<string>;
  /** The exposition's `Content-Type`. */
  readonly contentType: string;
}

/**
 * berth's instruments. From {@link createMetrics}: Prometheus instruments, all in one dedicated prom-client `Registry`
 * (never prom-client's global one, so two apps in one process, e.g. in tests, do not share counters). From
 * {@link inertMetrics} (`berth.metrics.enabled: false`): the same shape recording nothing, and prom-client unloaded.
 */
export interface Metrics {
  /** The registry every instrument below is registered in; {@link renderMetrics} renders the text format. */
  readonly registry: Exposition;
  /** `berth_http_requests_total{method,route,status}`: finished requests. */
  readonly httpRequests: CounterSeries<RequestLabels>;
  /** `berth_http_request_duration_seconds{method,route,status}`: time from request start to response end. */
  readonly httpDuration: HistogramSeries<RequestLabels>;
  /** `berth_http_received_bytes_total{method,route}`: request body bytes read by the handlers. */
  readonly bytesReceived: CounterSeries<'method' | 'route'>;
  /** `berth_http_sent_bytes_total{method,route}`: response body bytes sent. */
  readonly bytesSent: CounterSeries<'method' | 'route'>;
  /** `berth_uploads_in_progress`: open upload sessions being written by this process. */
  readonly uploadsInProgress: GaugeInstrument;
  /** `berth_storage_errors_total{driver,operation}`: storage driver calls that failed (not-found excluded). */
  readonly storageErrors: CounterInstrument<'driver' | 'operation'>;
  /** `berth_redis_errors_total{operation}`: Redis commands or connections that failed. */
  readonly redisErrors: CounterInstrument<'operation'>;
  /** `berth_degraded{part}`: 1 while a part (`storage`, `redis`) failed the last readiness check, else 0. */
  readonly degraded: GaugeInstrument<'part'>;
  /** `berth_gc_reclaimed_bytes_total`: bytes freed by garbage collection runs in this process. */
  readonly gcBytesReclaimed: CounterInstrument;
  /**
   * `berth_gc_last_run_timestamp_seconds`: when the last garbage collection run finished (Unix time), by this process
   * or, once {@link gcLastRunSource} is set, by any process (`berth gc` included) that recorded it in storage.
   */
  readonly gcLastRun: GaugeInstrument;
  /** `berth_gc_last_run_freed_bytes`: bytes the last recorded garbage collection run freed. */
  readonly gcLastRunFreedBytes: GaugeInstrument;
  /** Where the two gauges above read the last run from at each scrape (the storage's `_berth/gc-last.json`). */
  gcLastRunSource?: () => Promise<{ finishedAt: string; bytesFreed: number } | null>;
  /**
   * Where the `berth_proxy_*` series are read from at each scrape: the pull-through cache's `upstreams()`, the same
   * view `/readyz` and the UI's mirror page show (per upstream: hits and misses by kind, bytes fetched and served,
   * upstream errors, fills in progress, the rate limit last declared). Unset: no `berth_proxy_*` samples.
   */
  mirrorSource?: () => MirrorUpstreamStatus[];
  /** `berth_events_*{endpoint}`: webhook delivery (src/events/metrics.ts). */
  readonly events: EventMetrics;
  /** registry:2's `registry_http_*` series, for dashboards made for CNCF Distribution (src/http/registry2-metrics.ts). */
  readonly registry2: Registry2Metrics;
}

/** Options for {@link createMetrics}. */
export interface CreateMetricsOptions {
  /** Also export Node's process metrics (`process_*`, `nodejs_*`); default true. */
  defaultMetrics?: boolean;
  /** Labels added to every series, e.g. `{ instance_name: 'a' }`. */
  defaultLabels?: Record<string, string>;
}

/** Latency buckets (seconds): manifest GETs take milliseconds, blob transfers up to minutes. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** berth's per-request series (src/http/request-series.ts: no prom-client), registered in `registry`. */
function requestSeries(registry: SeriesRegistry): Pick<Metrics, 'httpRequests' | 'httpDuration' | 'bytesReceived' | 'bytesSent'> {
  return {
    httpRequests: new CounterSeries(
      'berth_http_requests_total',
      'HTTP requests answered, by method, route kind and status code.',
      ['method', 'route', 'status'] as const,
      registry,
    ),
    httpDuration: new HistogramSeries(
      'berth_http_request_duration_seconds',
      'Time from receiving a request to the end of its response, by method, route kind and status code.',
      ['method', 'route', 'status'] as const,
      DURATION_BUCKETS,
      registry,
    ),
    bytesReceived: new CounterSeries(
      'berth_http_received_bytes_total',
      'Request body bytes read, by method and route kind.',
      ['method', 'route'] as const,
      registry,
    ),
    bytesSent: new CounterSeries(
      'berth_http_sent_bytes_total',
      'Response body bytes sent, by method and route kind.',
      ['method', 'route'] as const,
      registry,
    ),
  };
}

/**
 * Creates the Prometheus instruments in a fresh registry. prom-client is loaded here, on the first call: a berth
 * with `berth.metrics.enabled: false` never calls this (it uses {@link inertMetrics}) and never loads it.
 */
export async function createMetrics(options: CreateMetricsOptions = {}): Promise<Metrics> {
  const { collectDefaultMetrics, Counter, Gauge, Registry } = await import('prom-client');
  const registry = new Registry();
  if (options.defaultLabels) registry.setDefaultLabels(options.defaultLabels);
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const instruments = {
    registry,
    ...requestSeries(registry),
    uploadsInProgress: new Gauge({
      name: 'berth_uploads_in_progress',
      help: 'Blob uploads currently receiving data in this process.',
      registers,
    }),
    storageErrors: new Counter({
      name: 'berth_storage_errors_total',
      help: 'Storage driver operations that failed (other than not found), by driver and operation.',
      labelNames: ['driver', 'operation'] as const,
      registers,
    }),
    redisErrors: new Counter({
      name: 'berth_redis_errors_total',
      help: 'Redis commands or connections that failed, by operation.',
      labelNames: ['operation'] as const,
      registers,
    }),
    degraded: new Gauge({
      name: 'berth_degraded',
      help: 'Whether a part (storage, redis) failed the last readiness check: 1 failed, 0 healthy.',
      labelNames: ['part'] as const,
      registers,
    }),
    gcBytesReclaimed: new Counter({
      name: 'berth_gc_reclaimed_bytes_total',
      help: 'Bytes freed by garbage collection runs in this process.',
      registers,
    }),
    events: await createEventMetrics(registry),
    registry2: await createRegistry2Metrics(registry),
  };
  const upstreams = (): MirrorUpstreamStatus[] => metrics.mirrorSource?.() ?? [];
  /**
   * A series of the pull-through cache, set at each scrape from what `upstreams()` reports (the same counts and
   * states /readyz and the UI read): `values` gives each upstream's samples as [extra labels, value].
   */
  const mirrorSeries = (
    type: 'counter' | 'gauge',
    name: string,
    help: string,
    labelNames: readonly string[],
    values: (u: MirrorUpstreamStatus) => Array<[Record<string, string>, number]>,
  ): void => {
    const collect = function (this: Counter | Gauge): void {
      this.reset();
      for (const u of upstreams()) for (const [labels, value] of values(u)) this.inc({ upstream: u.name, ...labels }, value);
    };
    const options = { name, help, labelNames: ['upstream', ...labelNames], registers, collect };
    if (type === 'counter') new Counter(options);
    else new Gauge(options);
  };
  const byKind = (counts: MirrorCounts['hits']): Array<[Record<string, string>, number]> =>
    (['manifest', 'blob'] as const).map((kind) => [{ kind }, counts[kind]]);
  mirrorSeries(
    'counter',
    'berth_proxy_cache_hits_total',
    'Pull-through cache requests served from local storage, by upstream and kind (manifest, blob).',
    ['kind'],
    (u) => byKind(u.counts.hits),
  );
  mirrorSeries(
    'counter',
    'berth_proxy_cache_misses_total',
    'Pull-through cache requests that needed the upstream, by upstream and kind (manifest, blob).',
    ['kind'],
    (u) => byKind(u.counts.misses),
  );
  const total =
    (value: (c: MirrorCounts) => number) =>
    (u: MirrorUpstreamStatus): Array<[Record<string, string>, number]> => [[{}, value(u.counts)]];
  mirrorSeries(
    'counter',
    'berth_proxy_upstream_fetched_bytes_total',
    'Body bytes received from the upstream (manifests and blob fills), by upstream.',
    [],
    total((c) => c.fetchedBytes),
  );
  mirrorSeries(
    'counter',
    'berth_proxy_cache_served_bytes_total',
    'Bytes of cached content sent to clients, by upstream.',
    [],
    total((c) => c.servedBytes),
  );
  mirrorSeries(
    'counter',
    'berth_proxy_upstream_errors_total',
    'Upstream requests that failed (network, timeout, 429, 5xx, broken transfer), by upstream.',
    [],
    total((c) => c.upstreamErrors),
  );
  mirrorSeries(
    'gauge',
    'berth_proxy_fills_in_progress',
    'Blob downloads from the upstream running in this process, by upstream.',
    [],
    total((c) => c.fillsInProgress),
  );
  mirrorSeries(
    'gauge',
    'berth_proxy_upstream_ratelimit_limit',
    'Pulls per window the upstream allows, from its ratelimit-limit header, by upstream.',
    [],
    (u) => (u.rateLimit ? [[{}, u.rateLimit.limit]] : []),
  );
  mirrorSeries(
    'gauge',
    'berth_proxy_upstream_ratelimit_remaining',
    "Pulls left in the window, from the upstream's ratelimit-remaining header, by upstream.",
    [],
    (u) => (u.rateLimit ? [[{}, u.rateLimit.remaining]] : []),
  );
  const metrics: Metrics = {
    ...instruments,
    gcLastRun: new Gauge({
      name: 'berth_gc_last_run_timestamp_seconds',
      help: 'Unix time at which the last garbage collection run (scheduled or berth gc) finished.',
      registers,
      async collect() {
        await readLastRun(this, null);
      },
    }),
    gcLastRunFreedBytes: new Gauge({
      name: 'berth_gc_last_run_freed_bytes',
      help: 'Bytes freed by the last garbage collection run (scheduled or berth gc).',
      registers,
      async collect() {
        await readLastRun(null, this);
      },
    }),
  };
  /** Sets the gauges from the recorded last run; a storage that cannot be read leaves them as they are. */
  const readLastRun = async (time: Gauge | null, bytes: Gauge | null): Promise<void> => {
    const run = await metrics.gcLastRunSource?.().catch(() => null);
    if (!run) return;
    time?.set(Date.parse(run.finishedAt) / 1000);
    bytes?.set(run.bytesFreed);
  };
  return metrics;
}

/**
 * Metrics that record nothing, for `berth.metrics.enabled: false`: the same {@link Metrics}, every instrument inert
 * (the per-request series exist but are registered nowhere; the metrics plugin is not installed then anyway).
 * Loads no prom-client.
 */
export function inertMetrics(): Metrics {
  return {
    registry: { metrics: () => Promise.resolve(''), contentType: 'text/plain; version=0.0.4; charset=utf-8' },
    ...requestSeries(DISCARD),
    uploadsInProgress: inertInstrument(),
    storageErrors: inertInstrument(),
    redisErrors: inertInstrument(),
    degraded: inertInstrument(),
    gcBytesReclaimed: inertInstrument(),
    gcLastRun: inertInstrument(),
    gcLastRunFreedBytes: inertInstrument(),
    events: INERT_EVENT_METRICS,
    registry2: inertRegistry2Metrics(),
  };
}

/** Where the metrics are served: `berth.metrics` in the config file. */
export interface MetricsConfig {
  /** `berth.metrics.enabled` (default true). */
  enabled: boolean;
  /** `berth.metrics.path` (default `/metrics`). */
  path: string;
  /** `berth.metrics.addr`: serve on this separate `host:port` instead of the registry's own address. */
  addr?: string;
}

/** Reads `berth.metrics` (`enabled`, `path`, `addr`), naming the key in errors. */
export function metricsConfig(config: Config): MetricsConfig {
  const raw = config.berth.raw.metrics;
  const debug = debugMetrics(config);
  if (debug && raw !== undefined && raw !== null && raw !== '') {
    throw new ConfigError('http.debug.prometheus: berth.metrics is set too; name one place for the metrics');
  }
  if (debug) return debug;
  if (raw === undefined || raw === null || raw === '') return { enabled: true, path: '/metrics' };
  if (!isSection(raw)) throw new ConfigError('berth.metrics: expected a mapping');
  const path = str(raw, 'path', 'berth.metrics.', '/metrics');
  if (!path.startsWith('/') || path.startsWith('/v2')) {
    throw new ConfigError(`berth.metrics.path: expected an absolute path outside /v2, got ${JSON.stringify(path)}`);
  }
  const result: MetricsConfig = { enabled: bool(raw, 'enabled', 'berth.metrics.', true), path };
  const addr = optString(raw, 'addr', 'berth.metrics.');
  if (addr !== undefined) {
    try {
      parseListenAddress(addr);
    } catch {
      throw new ConfigError(`berth.metrics.addr: expected host:port or :port, got ${JSON.stringify(addr)}`);
    }
    result.addr = addr;
  }
  return result;
}

/**
 * registry:2's `http.debug` (`addr`, `prometheus.enabled`, `prometheus.path`): berth serves its Prometheus metrics on
 * that address, as registry:2 does; it has no other debug endpoints there. `addr` without `prometheus.enabled` is
 * refused rather than silently serving nothing.
 */
function debugMetrics(config: Config): MetricsConfig | null {
  const http = config.raw.http;
  const debug = isSection(http) ? http.debug : undefined;
  if (debug === undefined || debug === null || debug === '') return null;
  if (!isSection(debug)) throw new ConfigError('http.debug: expected a mapping');
  const addr = optString(debug, 'addr', 'http.debug.');
  const prometheus = isSection(debug.prometheus) ? debug.prometheus : {};
  const enabled = bool(prometheus, 'enabled', 'http.debug.prometheus.', false);
  if (!enabled) {
    if (addr !== undefined)
      throw new ConfigError(
        'http.debug.addr: berth serves only Prometheus metrics there; set http.debug.prometheus.enabled: true (or remove http.debug)',
      );
    return null;
  }
  if (addr === undefined) throw new ConfigError('http.debug.prometheus: needs http.debug.addr');
  try {
    parseListenAddress(addr);
  } catch {
    throw new ConfigError(`http.debug.addr: expected host:port or :port, got ${JSON.stringify(addr)}`);
  }
  const path = str(prometheus, 'path', 'http.debug.prometheus.', '/metrics');
  if (!path.startsWith('/')) throw new ConfigError(`http.debug.prometheus.path: expected an absolute path, got ${JSON.stringify(path)}`);
  return { enabled: true, path, addr };
}

/** The `status` label of a request whose client closed the connection before the response ended (nginx's 499). */
export const CLIENT_CLOSED_REQUEST = String(CLIENT_CLOSED_STATUS);

/** Options for {@link metricsPlugin}. */
export interface MetricsPluginOptions {
  /** Serve the text exposition on the app itself (default true); false when a separate address serves it. */
  serve?: boolean;
  /** Path of the exposition endpoint (default `/metrics`). */
  path?: string;
  /**
   * Runs before the exposition is served on the registry's own address; throws (e.g. 401 with the challenge) to
   * refuse. berth passes its authorizer here whenever `/v2/` needs authentication.
   */
  guard?: (request: FastifyRequest) => Promise<void>;
}

/** The map under `key` in `outer`, made on first use. */
function nested<K, V>(outer: Map<K, Map<string, V>>, key: K): Map<string, V> {
  let inner = outer.get(key);
  if (!inner) outer.set(key, (inner = new Map<string, V>()));
  return inner;
}

/** The `route` label of a request: the kind the routes set, else the route pattern, never the raw URL. */
function routeLabel(request: FastifyRequest): string {
  return request.routeKind ?? request.routeOptions.url ?? 'unmatched';
}

/** Bytes of a request body counted at once (per chunk, the counter's label lookup costs more than the bytes). */
const COUNT_EVERY = 1024 * 1024;

/**
 * Counts a request's body bytes as Node's HTTP parser hands them to the request stream (its `push`), with no stream
 * in between: a counting Readable in front of the request cost ~10% of the main thread's time on a 256 MiB push
 * (one more buffered hop and 'data' event per 64 KiB chunk). A body nobody reads is counted too (Node reads and drops
 * it): those bytes were received all the same.
 */
function countBody(raw: IncomingMessage, count: (bytes: number) => void): void {
  let uncounted = 0;
  const report = (): void => {
    if (uncounted > 0) count(uncounted);
    uncounted = 0;
  };
  const push = raw.push.bind(raw);
  raw.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (chunk === null) report();
    else {
      uncounted += typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : (chunk as Uint8Array).byteLength;
      if (uncounted >= COUNT_EVERY) report();
    }
    return push(chunk, encoding);
  };
  raw.once('close', report);
}

/** What the metrics plugin keeps per request while it runs. */
interface RequestMetrics {
  /** The registry:2 `handler` label, once the request is counted in `registry_http_in_flight_requests`. */
  handler: string | undefined;
  /** Response body bytes sent so far (for `registry_http_response_size_bytes`). */
  sent: number;
  /** Recorded already (by onResponse, or as 499 when the client went away first). */
  recorded: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the metrics plugin (src/http/metrics.ts) while the request runs. */
    berthMetrics?: RequestMetrics;
  }
}

/**
 * The request body as a stream, for handlers that stream it (blob uploads, manifests): `request.raw`, whose bytes
 * {@link metricsPlugin} counts as they arrive when it is registered.
 */
export function requestBody(request: FastifyRequest): Readable {
  return request.raw;
}

/** Whether a request carries a body: a declared non-zero length or, without a length, a chunked one. */
export function hasBody(request: Pick<IncomingMessage, 'headers'>): boolean {
  const len = request.headers['content-length'];
  if (len !== undefined) return Number(len) > 0;
  return request.headers['transfer-encoding'] !== undefined;
}

/** Responses whose writes are counted already. */
const countedResponses = new WeakSet<ServerResponse>();

/**
 * Counts the body bytes written to a response whose payload is a stream, as the stream is piped into it. Counting
 * at `write` keeps the stream piped straight into the response: a counting stream in between costs blob GETs half
 * their throughput (it serialises reading the file and sending it).
 */
function countWrites(res: ServerResponse, count: (bytes: number) => void): void {
  if (countedResponses.has(res)) return;
  countedResponses.add(res);
  const write = res.write.bind(res) as (...args: unknown[]) => boolean;
  res.write = function countedWrite(chunk: unknown, ...rest: unknown[]): boolean {
    if (typeof chunk === 'string') count(Buffer.byteLength(chunk));
    else if (chunk instanceof Uint8Array) count(chunk.byteLength);
    return write(chunk, ...rest);
  } as ServerResponse['write'];
}

/** Byte length of a response payload that is not a stream (`null` when it is one). */
function payloadLength(payload: unknown): number | null {
  if (payload === undefined || payload === null) return 0;
  if (typeof payload === 'string') return Buffer.byteLength(payload);
  if (Buffer.isBuffer(payload)) return payload.length;
  if (payload instanceof Uint8Array) return payload.byteLength;
  return null;
}

/** The text exposition of every series, registry:2's written as its Go client writes them (see {@link registry2Text}). */
export async function renderMetrics(metrics: Metrics): Promise<string> {
  return registry2Text(await metrics.registry.metrics());
}

/** Renders the exposition and writes it to a fastify reply. */
async function sendMetrics(metrics: Metrics, reply: FastifyReply): Promise<string> {
  const body = await renderMetrics(metrics);
  reply.header('content-type', metrics.registry.contentType);
  reply.header('cache-control', 'no-store');
  return body;
}

/**
 * A fastify plugin (applied to the whole app, not encapsulated) that records every request in `metrics` — method,
 * route kind (`request.routeKind`, else the route pattern), status, latency, body bytes in and out — and serves the
 * Prometheus text format on `GET /metrics` unless `options.serve` is false. Register it before the routes.
 */
export function metricsPlugin(metrics: Metrics, options: MetricsPluginOptions = {}): FastifyPluginAsync {
  const serve = options.serve ?? true;
  const path = options.path ?? '/metrics';
  const r2 = metrics.registry2;
  /**
   * The cells of the finished-request series for one (method, route, status): found once per combination, then
   * each request records with a few additions (src/http/request-series.ts).
   */
  interface Finished {
    requests: Cell;
    duration: HistogramCell;
    r2: { requests: Cell; duration: HistogramCell; requestSize: HistogramCell; responseSize: HistogramCell } | undefined;
  }
  // By method, route and status: label values are looked up as they are, no key string is built per request.
  const finished = new Map<string, Map<string, Map<string, Finished>>>();
  const finishedCells = (method: string, route: string, status: string, handler: string | undefined): Finished => {
    const byStatus = nested(nested(finished, method), route);
    // A request that never reached the registry's handler (refused before it) has no registry:2 handler label.
    const key = handler === undefined ? `${status} -` : status;
    let cells = byStatus.get(key);
    if (!cells) {
      const labels = { method, route, status };
      const r2method = method.toLowerCase();
      cells = {
        requests: metrics.httpRequests.cell(labels),
        duration: metrics.httpDuration.cell(labels),
        r2:
          handler === undefined
            ? undefined
            : {
                requests: r2.requests.cell({ code: status, handler, method: r2method }),
                duration: r2.duration.cell({ handler, method: r2method }),
                requestSize: r2.requestSize.cell({ handler }),
                responseSize: r2.responseSize.cell({ handler }),
              },
      };
      byStatus.set(key, cells);
    }
    return cells;
  };
  const sentCells = new Map<string, Map<string, Cell>>();
  const sentCell = (method: string, route: string): Cell => {
    const byRoute = nested(sentCells, method);
    let cell = byRoute.get(route);
    if (!cell) byRoute.set(route, (cell = metrics.bytesSent.cell({ method, route })));
    return cell;
  };
  const record = (request: FastifyRequest, reply: FastifyReply, status: string): void => {
    const state = request.berthMetrics;
    if (!state || state.recorded) return;
    state.recorded = true;
    const seconds = reply.elapsedTime / 1000;
    const cells = finishedCells(request.method, routeLabel(request), status, state.handler);
    cells.requests.value++;
    metrics.httpDuration.record(cells.duration, seconds);
    if (state.handler === undefined || !cells.r2) return;
    r2.inFlight.dec({ handler: state.handler });
    cells.r2.requests.value++;
    r2.duration.record(cells.r2.duration, seconds);
    r2.requestSize.record(cells.r2.requestSize, approximateRequestSize(request.raw));
    r2.responseSize.record(cells.r2.responseSize, state.sent);
  };
  // The hooks take callbacks rather than returning promises: they run on every request, and a promise per hook
  // per request is measurable on a manifest GET.
  const plugin: FastifyPluginAsync = async (app) => {
    // fastify runs no onResponse hook when the client goes away first: the app's tracker of abandoned requests
    // (shared with the access log) reports those, counted as 499 as nginx logs them.
    abandonedRequests(app).on((request, reply) => record(request, reply, CLIENT_CLOSED_REQUEST));
    app.addHook('onRequest', (request, _reply, done) => {
      request.berthMetrics = { handler: undefined, sent: 0, recorded: false };
      done();
    });
    app.addHook('preParsing', (request, _reply, payload, done) => {
      const state = request.berthMetrics!;
      // The route is known once the routes' own onRequest hook has run (the registry routes match it there).
      const handler = request.routeKind === undefined ? undefined : REGISTRY2_HANDLERS[request.routeKind];
      if (handler !== undefined) {
        state.handler = handler;
        r2.inFlight.inc({ handler });
      }
      if (!hasBody(request.raw)) {
        done(null, payload);
        return;
      }
      // Counted once per MiB and at the end, under the route kind known by then.
      countBody(request.raw, (n) => {
        metrics.bytesReceived.inc({ method: request.method, route: routeLabel(request) }, n);
      });
      done(null, payload);
    });
    app.addHook('onSend', (request, reply, payload, done) => {
      // HEAD responses carry no body, whatever the handler returned.
      if (request.method === 'HEAD') {
        done(null, payload);
        return;
      }
      const state = request.berthMetrics;
      const n = payloadLength(payload);
      if (n !== null) {
        if (n > 0) {
          sentCell(request.method, routeLabel(request)).value += n;
          if (state) state.sent += n;
        }
      } else if (payload instanceof Readable) {
        let cell: Cell | undefined;
        countWrites(reply.raw, (b) => {
          (cell ??= sentCell(request.method, routeLabel(request))).value += b;
          if (state) state.sent += b;
        });
      }
      done(null, payload);
    });
    app.addHook('onResponse', (request, reply, done) => {
      record(request, reply, String(reply.statusCode));
      done();
    });
    if (serve) {
      app.get(path, async (request, reply) => {
        request.routeKind = 'metrics';
        await options.guard?.(request);
        return sendMetrics(metrics, reply);
      });
    }
  };
  // Like fastify-plugin: the hooks must apply to routes registered outside this plugin's scope.
  return Object.assign(plugin, {
    [Symbol.for('skip-override')]: true,
    [Symbol.for('fastify.display-name')]: 'berth-metrics',
  });
}

/** A running metrics listener started by {@link startMetricsServer}. */
export interface MetricsServer {
  /** `http://host:port` of the listener (the real port when `addr` asked for port 0). */
  readonly url: string;
  /** Stops listening and closes idle connections. */
  close(): Promise<void>;
}

/**
 * Serves `GET <path>` (default `/metrics`) on a separate address (`host:port` or `:port`), for deployments that
 * keep metrics off the registry's public port. Anything else is answered 404.
 */
export async function startMetricsServer(metrics: Metrics, addr: string, path = '/metrics'): Promise<MetricsServer> {
  const { host, port } = parseListenAddress(addr);
  const server: Server = createServer((req: IncomingMessage, res) => {
    const url = new URL(req.url ?? '/', 'http://metrics');
    if (url.pathname !== path) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    renderMetrics(metrics).then(
      (body) => {
        res.writeHead(200, { 'content-type': metrics.registry.contentType, 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`cannot collect metrics: ${String(err)}\n`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${shownHost}:${address.port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeIdleConnections();
      }),
  };
}
