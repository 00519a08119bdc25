import type { IncomingMessage } from 'node:http';
import type { Registry } from 'prom-client';
import { inertInstrument, type HistogramInstrument } from '../metrics/instruments.js';
import { CounterSeries, DISCARD, GaugeSeries, HistogramSeries, type SeriesRegistry } from './request-series.js';

/**
 * registry:2's own HTTP series (`registry_http_*`), with its names, label names, types and buckets, so dashboards
 * built for CNCF Distribution keep working against berth. Recorded beside berth's `berth_http_*` series.
 */
export interface Registry2Metrics {
  /** `registry_http_requests_total{code,handler,method}` (counter). */
  readonly requests: CounterSeries<'code' | 'handler' | 'method'>;
  /** `registry_http_request_duration_seconds{handler,method}` (histogram). */
  readonly duration: HistogramSeries<'handler' | 'method'>;
  /** `registry_http_in_flight_requests{handler}` (gauge). */
  readonly inFlight: GaugeSeries<'handler'>;
  /** `registry_http_request_size_bytes{handler}` (histogram): approximate request size, headers included. */
  readonly requestSize: HistogramSeries<'handler'>;
  /** `registry_http_response_size_bytes{handler}` (histogram): response body bytes written. */
  readonly responseSize: HistogramSeries<'handler'>;
  /**
   * `registry_storage_action_seconds{action,driver}` (histogram): storage driver call durations, recorded by the
   * timing driver (src/storage/timed-driver.ts) that `withStorageTiming` (src/compose.ts) puts in front of the driver when metrics are on.
   */
  readonly storageAction: HistogramInstrument<'action' | 'driver'>;
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
/** registry:2's storage action buckets (seconds): Prometheus' Go client defaults. */
const STORAGE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** registry:2's per-request series (this module's own classes), registered in `registry`. */
function requestSeries(registry: SeriesRegistry): Omit<Registry2Metrics, 'storageAction'> {
  return {
    requests: new CounterSeries(
      'registry_http_requests_total',
      'Total number of HTTP requests made.',
      ['code', 'handler', 'method'] as const,
      registry,
    ),
    duration: new HistogramSeries(
      'registry_http_request_duration_seconds',
      'The HTTP request latencies in seconds.',
      ['handler', 'method'] as const,
      DURATION_BUCKETS,
      registry,
    ),
    inFlight: new GaugeSeries('registry_http_in_flight_requests', 'The in-flight HTTP requests', ['handler'] as const, registry),
    requestSize: new HistogramSeries(
      'registry_http_request_size_bytes',
      'The HTTP request sizes in bytes.',
      ['handler'] as const,
      SIZE_BUCKETS,
      registry,
    ),
    responseSize: new HistogramSeries(
      'registry_http_response_size_bytes',
      'The HTTP response sizes in bytes.',
      ['handler'] as const,
      SIZE_BUCKETS,
      registry,
    ),
  };
}

/** Creates registry:2's instruments in `registry`; prom-client is loaded here, on first use. */
export async function createRegistry2Metrics(registry: Registry): Promise<Registry2Metrics> {
  const { Histogram } = await import('prom-client');
  const registers = [registry];
  return {
    ...requestSeries(registry),
    storageAction: new Histogram({
      name: 'registry_storage_action_seconds',
      help: 'The number of seconds that the storage action takes',
      labelNames: ['action', 'driver'] as const,
      buckets: STORAGE_BUCKETS,
      registers,
    }),
  };
}

/** registry:2's instruments recording nothing (metrics off). */
export function inertRegistry2Metrics(): Registry2Metrics {
  return { ...requestSeries(DISCARD), storageAction: inertInstrument() };
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
 * A number as Prometheus' Go client writes it in the text format (`strconv.FormatFloat(f, 'g', -1, 64)`): the
 * shortest digits that read back the same, in exponent form below 1e-4 and from 1e6 up (`1.048576e+06`, `1e-05`),
 * `+Inf`, `-Inf` and `NaN`.
 */
export function goFloat(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  if (n === 0) return '0';
  const [mantissa = '', exponent = '0'] = n.toExponential().split('e');
  const exp = Number(exponent);
  if (exp >= -4 && exp < 6) return String(n);
  const digits = String(Math.abs(exp)).padStart(2, '0');
  return `${mantissa}e${exp < 0 ? '-' : '+'}${digits}`;
}

/** A sample's labels as `[name, raw value]` pairs (the value still escaped), or null when the line is not one. */
function parseLabels(body: string): [string, string][] | null {
  const pairs: [string, string][] = [];
  let i = 0;
  while (i < body.length) {
    const eq = body.indexOf('="', i);
    if (eq < 0) return null;
    const name = body.slice(i, eq);
    let j = eq + 2;
    while (j < body.length && body[j] !== '"') j += body[j] === '\\' ? 2 : 1;
    if (j >= body.length) return null;
    pairs.push([name, body.slice(eq + 2, j)]);
    i = j + 1;
    if (body[i] === ',') i++;
  }
  return pairs;
}

/**
 * The `registry_*` samples of a text exposition rewritten as registry:2 (Prometheus' Go client) writes them: label
 * names sorted with `le` last, numbers in Go's notation (the `le` bounds `2.147483648e+09`, `+Inf`, and the values).
 * prom-client writes `le="2147483648"` first instead; an `le` matcher in a dashboard or recording rule made for
 * registry:2 would then match nothing. Other lines are left as they are.
 */
export function registry2Text(text: string): string {
  return text
    .split('\n')
    .map((line) => (line.startsWith('registry_') ? goSample(line) : line))
    .join('\n');
}

function goSample(line: string): string {
  const space = line.lastIndexOf(' ');
  const raw = line.slice(space + 1);
  const value = Number(raw);
  if (space < 0 || (Number.isNaN(value) && raw !== 'NaN')) return line;
  const open = line.indexOf('{');
  if (open < 0 || open > space) return `${line.slice(0, space)} ${goFloat(value)}`;
  const close = line.lastIndexOf('}', space);
  const pairs = close > open ? parseLabels(line.slice(open + 1, close)) : null;
  if (!pairs) return line;
  const labels = pairs
    .filter(([name]) => name !== 'le')
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, raw]) => `${name}="${raw}"`);
  const le = pairs.find(([name]) => name === 'le');
  if (le) labels.push(`le="${/^[+-]?Inf$/.test(le[1]) ? le[1] : goFloat(Number(le[1]))}"`);
  return `${line.slice(0, open)}{${labels.join(',')}} ${goFloat(value)}`;
}
