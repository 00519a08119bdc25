/**
 * Counters, gauges and histograms for the series recorded on every request (`berth_http_*`, `registry_http_*`).
 *
 * prom-client's instruments hash the label object on every `inc`/`observe` (sorting and joining its keys); nine such
 * calls per request were ~15% of the CPU of a manifest GET. Here a labelled value is a {@link Cell}, found once per
 * label combination and then changed in place: the per-request code keeps the cells of each (method, route, status)
 * it has seen and records with a few additions. The cells are turned into prom-client's exposition shape only when
 * scraped: each class is registered in the prom-client {@link Registry} and answers its `get()`, so the text format,
 * default labels and registry:2's Go-format rewrite (registry2-metrics.ts) apply unchanged.
 */
import type { Registry } from 'prom-client';

/** Where a series registers: prom-client's {@link Registry}, or {@link DISCARD} (metrics off); a type only. */
export type SeriesRegistry = Pick<Registry, 'registerMetric'>;

/** Registers nothing: the series of inert metrics (`berth.metrics.enabled: false`), never scraped. */
export const DISCARD: SeriesRegistry = { registerMetric: () => undefined };

/** One labelled value: the count of a counter, the level of a gauge, or the buckets, sum and count of a histogram. */
export interface Cell {
  value: number;
}

/** A histogram's labelled value: per-bucket counts (not cumulative; cumulated when scraped), sum and count. */
export interface HistogramCell {
  readonly buckets: Float64Array;
  sum: number;
  count: number;
}

type Labels<L extends string> = Partial<Record<L, string | number>>;

/** What prom-client's Registry reads from a metric (the subset of its `MetricObjectWithValues` it uses). */
interface Exported {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  values: Array<{ labels: Record<string, string | number>; value: number; metricName?: string }>;
  aggregator: 'sum';
}

/** The key of a label combination: the values in label-name order. */
function keyOf<L extends string>(labelNames: readonly L[], labels: Labels<L>): string {
  let key = '';
  for (const name of labelNames) key += `${labels[name] ?? ''}\u0001`;
  return key;
}

abstract class Series<L extends string, C> {
  abstract readonly type: Exported['type'];
  readonly aggregator = 'sum' as const;
  protected readonly cells = new Map<string, { labels: Record<string, string | number>; cell: C }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly L[],
    registry: SeriesRegistry,
  ) {
    // prom-client's Registry takes any object with a name and get(); the cast is to its metric class type.
    registry.registerMetric(this as unknown as Parameters<SeriesRegistry['registerMetric']>[0]);
  }

  protected abstract newCell(): C;

  /** The value of one label combination (created at zero on first use); keep it to record without a lookup. */
  cell(labels: Labels<L>): C {
    const key = keyOf(this.labelNames, labels);
    let entry = this.cells.get(key);
    if (!entry) {
      const own: Record<string, string | number> = {};
      for (const name of this.labelNames) {
        const value = labels[name];
        if (value !== undefined) own[name] = value;
      }
      entry = { labels: own, cell: this.newCell() };
      this.cells.set(key, entry);
    }
    return entry.cell;
  }

  abstract get(): Promise<Exported>;
}

/** A counter (`inc` adds, default 1) or, with `dec` and `set` too, a gauge. */
class ValueSeries<L extends string> extends Series<L, Cell> {
  constructor(
    readonly type: 'counter' | 'gauge',
    name: string,
    help: string,
    labelNames: readonly L[],
    registry: SeriesRegistry,
  ) {
    super(name, help, labelNames, registry);
  }
  protected newCell(): Cell {
    return { value: 0 };
  }
  inc(labels: Labels<L> = {}, by = 1): void {
    this.cell(labels).value += by;
  }
  get(): Promise<Exported> {
    const values = [...this.cells.values()].map(({ labels, cell }) => ({ labels: { ...labels }, value: cell.value }));
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }
}

export class CounterSeries<L extends string = string> extends ValueSeries<L> {
  constructor(name: string, help: string, labelNames: readonly L[], registry: SeriesRegistry) {
    super('counter', name, help, labelNames, registry);
  }
}

export class GaugeSeries<L extends string = string> extends ValueSeries<L> {
  constructor(name: string, help: string, labelNames: readonly L[], registry: SeriesRegistry) {
    super('gauge', name, help, labelNames, registry);
  }
  dec(labels: Labels<L> = {}, by = 1): void {
    this.cell(labels).value -= by;
  }
  set(labels: Labels<L>, value: number): void {
    this.cell(labels).value = value;
  }
}

/** A histogram with fixed upper bounds; exported as prom-client exports its own (`_bucket` with `le`, `_sum`, `_count`). */
export class HistogramSeries<L extends string = string> extends Series<L, HistogramCell> {
  readonly type = 'histogram';
  private readonly bounds: Float64Array;

  constructor(name: string, help: string, labelNames: readonly L[], buckets: readonly number[], registry: SeriesRegistry) {
    super(name, help, labelNames, registry);
    this.bounds = Float64Array.from(buckets);
  }

  protected newCell(): HistogramCell {
    return { buckets: new Float64Array(this.bounds.length), sum: 0, count: 0 };
  }

  /** Adds `value` to `cell` (a value above every bound counts only in `+Inf`, that is in `count`). */
  record(cell: HistogramCell, value: number): void {
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]!) {
        cell.buckets[i]!++;
        break;
      }
    }
    cell.sum += value;
    cell.count++;
  }

  observe(labels: Labels<L>, value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`${this.name}: not a finite number: ${value}`);
    this.record(this.cell(labels), value);
  }

  get(): Promise<Exported> {
    const values: Exported['values'] = [];
    const bucket = `${this.name}_bucket`;
    for (const { labels, cell } of this.cells.values()) {
      let acc = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        acc += cell.buckets[i]!;
        values.push({ labels: { le: this.bounds[i]!, ...labels }, value: acc, metricName: bucket });
      }
      values.push({ labels: { le: '+Inf', ...labels }, value: cell.count, metricName: bucket });
      values.push({ labels: { ...labels }, value: cell.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...labels }, value: cell.count, metricName: `${this.name}_count` });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }
}
