/**
 * The instruments berth records into, as the code that records sees them: a counter, a gauge, a histogram, each with
 * optional labels. The Prometheus implementation (prom-client's classes, src/http/metrics.ts) satisfies these
 * interfaces; with `berth.metrics.enabled: false` every instrument is {@link inertInstrument}, which records nothing,
 * and prom-client is never loaded. Nothing here imports prom-client.
 */

/** Label values of one series (label name to value). */
export type LabelValues<L extends string> = Partial<Record<L, string | number>>;

/** A counter: `inc` adds (default 1), to the unlabelled series or to the one `labels` names. */
export interface CounterInstrument<L extends string = string> {
  inc(value?: number): void;
  inc(labels: LabelValues<L>, value?: number): void;
}

/** A gauge: a counter that also goes down and can be set. */
export interface GaugeInstrument<L extends string = string> extends CounterInstrument<L> {
  dec(value?: number): void;
  dec(labels: LabelValues<L>, value?: number): void;
  set(value: number): void;
  set(labels: LabelValues<L>, value: number): void;
}

/** A histogram: `observe` records a value; `labels` gives the series of one label combination, to keep. */
export interface HistogramInstrument<L extends string = string> {
  observe(value: number): void;
  observe(labels: LabelValues<L>, value: number): void;
  labels(labels: LabelValues<L>): { observe(value: number): void };
}

/** The one inert instrument: every call does nothing. */
const INERT = {
  inc(): void {},
  dec(): void {},
  set(): void {},
  observe(): void {},
  labels: (): { observe(value: number): void } => INERT,
};

/** An instrument that records nothing, for every kind (used when metrics are off). */
export function inertInstrument<L extends string = string>(): GaugeInstrument<L> & HistogramInstrument<L> {
  return INERT;
}
