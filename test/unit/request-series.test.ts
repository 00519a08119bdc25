import t from 'tap';
import { Histogram, Registry } from 'prom-client';
import { CounterSeries, GaugeSeries, HistogramSeries } from '../../src/http/request-series.js';

t.test('a histogram series writes the exposition prom-client writes for the same observations', async (t) => {
  const ours = new Registry();
  const theirs = new Registry();
  const buckets = [0.01, 0.1, 1];
  const h = new HistogramSeries('x_seconds', 'Help text.', ['method', 'route'] as const, buckets, ours);
  const p = new Histogram({ name: 'x_seconds', help: 'Help text.', labelNames: ['method', 'route'], buckets, registers: [theirs] });
  const observations: Array<[Record<string, string>, number]> = [
    [{ method: 'GET', route: 'blob' }, 0.005],
    [{ method: 'GET', route: 'blob' }, 0.01],
    [{ method: 'GET', route: 'blob' }, 0.5],
    [{ method: 'GET', route: 'blob' }, 7],
    [{ method: 'PUT', route: 'manifest' }, 0.05],
  ];
  const cell = h.cell({ method: 'GET', route: 'blob' });
  for (const [labels, v] of observations) {
    if (labels.method === 'GET') h.record(cell, v);
    else h.observe(labels, v);
    p.observe(labels, v);
  }
  t.equal(await ours.metrics(), await theirs.metrics(), 'same text, line for line');
  const text = await ours.metrics();
  t.match(text, /x_seconds_bucket\{le="0.01",method="GET",route="blob"\} 2\n/, 'cumulative: a value on a bound counts in it');
  t.match(text, /x_seconds_bucket\{le="\+Inf",method="GET",route="blob"\} 4\n/, 'a value above every bound counts only in +Inf');
  t.match(text, /x_seconds_count\{method="GET",route="blob"\} 4\n/);
  t.throws(() => h.observe({ method: 'GET', route: 'blob' }, NaN), /not a finite number/);
});

t.test('counter and gauge series: one value per label combination, found again by the same labels', async (t) => {
  const registry = new Registry();
  const c = new CounterSeries('c_total', 'Counts.', ['code', 'handler'] as const, registry);
  const g = new GaugeSeries('g', 'Level.', ['handler'] as const, registry);
  c.inc({ code: '200', handler: 'blob' });
  c.cell({ handler: 'blob', code: '200' }).value += 2;
  c.inc({ code: '404', handler: 'blob' }, 5);
  g.inc({ handler: 'blob' });
  g.inc({ handler: 'blob' });
  g.dec({ handler: 'blob' });
  g.set({ handler: 'manifest' }, 7);
  const text = await registry.metrics();
  t.match(text, /# TYPE c_total counter\n/);
  t.match(text, /c_total\{code="200",handler="blob"\} 3\n/);
  t.match(text, /c_total\{code="404",handler="blob"\} 5\n/);
  t.match(text, /# TYPE g gauge\n/);
  t.match(text, /g\{handler="blob"\} 1\n/);
  t.match(text, /g\{handler="manifest"\} 7\n/);
});
