import t from 'tap';
import { configFrom } from '../../src/config/config.js';
import { metricsConfig } from '../../src/http/metrics.js';

// registry:2's `http.debug` section: berth serves its Prometheus metrics on that address (serve listens there).
const rows: { name: string; http: Record<string, unknown>; berth?: Record<string, unknown>; want: unknown }[] = [
  { name: 'no debug section: metrics on the registry port', http: {}, want: { enabled: true, path: '/metrics' } },
  {
    name: 'registry:2 debug server with prometheus',
    http: { debug: { addr: '127.0.0.1:5001', prometheus: { enabled: true, path: '/metrics' } } },
    want: { enabled: true, path: '/metrics', addr: '127.0.0.1:5001' },
  },
  {
    name: 'a path of its own',
    http: { debug: { addr: ':5001', prometheus: { enabled: 'yes', path: '/prom' } } },
    want: { enabled: true, path: '/prom', addr: ':5001' },
  },
  {
    name: 'addr without prometheus is refused, not ignored',
    http: { debug: { addr: ':5001' } },
    want: /http\.debug\.addr: berth serves only Prometheus metrics/,
  },
  { name: 'prometheus without addr', http: { debug: { prometheus: { enabled: true } } }, want: /http\.debug\.prometheus: needs http\.debug\.addr/ },
  { name: 'a bad addr', http: { debug: { addr: 'nowhere', prometheus: { enabled: true } } }, want: /http\.debug\.addr: expected host:port/ },
  {
    name: 'both places named',
    http: { debug: { addr: ':5001', prometheus: { enabled: true } } },
    berth: { metrics: { addr: ':5002' } },
    want: /name one place for the metrics/,
  },
];

for (const row of rows) {
  const config = configFrom({ http: row.http, ...(row.berth ? { berth: row.berth } : {}) });
  if (row.want instanceof RegExp) t.throws(() => metricsConfig(config), row.want, row.name);
  else t.same(metricsConfig(config), row.want, row.name);
}
