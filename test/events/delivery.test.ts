import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import t, { type Test } from 'tap';
import { AuditLog } from '../../src/events/audit.js';
import { parseNotifications } from '../../src/events/config.js';
import { EVENTS_MEDIA_TYPE, type RequestContext } from '../../src/events/event.js';
import { createEventMetrics } from '../../src/events/metrics.js';
import { RegistryEvents } from '../../src/events/registry-events.js';
import { StorageEventQueue } from '../../src/events/storage-queue.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { startEventReceiver } from '../helpers/event-receiver.js';

const ctx: RequestContext = {
  id: 'req-1',
  addr: '127.0.0.1:4242',
  host: 'registry.test:5000',
  method: 'PUT',
  useragent: 'test-agent',
  user: 'alice',
  baseUrl: 'http://registry.test:5000',
};

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;

async function setup(t: Test, endpoints: unknown[], extra: Record<string, unknown> = {}) {
  const root = await mkdtemp(join(tmpdir(), 'berth-events-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const registry = new Registry();
  const metrics = await createEventMetrics(registry);
  const warnings: string[] = [];
  const notifications = parseNotifications({ endpoints, ...extra }, (m) => warnings.push(m));
  const events = new RegistryEvents({
    notifications,
    queue: new StorageEventQueue(new FilesystemDriver({ rootDirectory: root })),
    metrics,
    logger: pino({ level: 'silent' }),
    audit: new AuditLog(pino({ level: 'silent' })),
    listenAddr: ':5000',
    delivery: { pollMs: 50 },
  });
  events.start();
  t.teardown(() => events.close());
  return { events, registry, warnings, root };
}

async function metric(registry: Registry, name: string, endpoint: string): Promise<number | undefined> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  return m?.values.find((v) => v.labels.endpoint === endpoint)?.value;
}

t.test('an event reaches the endpoint as registry:2 sends it: one per POST, its content type, configured headers', async (t) => {
  const rx = await startEventReceiver(t);
  const { events, registry, warnings } = await setup(t, [
    { name: 'rx', url: rx.url, headers: { Authorization: ['Bearer s3cret'], 'X-Multi': ['a', 'b'] }, timeout: '2s', threshold: 3, backoff: '100ms' },
  ]);
  t.same(warnings, []);
  await events.emit('push', { repository: 'a/b', digest: D1, mediaType: 'application/octet-stream', size: 12, kind: 'blob' }, ctx);
  await events.emit(
    'push',
    {
      repository: 'a/b',
      digest: D2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      size: 300,
      kind: 'manifest',
      tag: 'v1',
      references: [{ mediaType: 'x', size: 1, digest: D1 }],
    },
    ctx,
  );
  const got = await rx.waitFor((e) => e.length === 2);
  t.equal(rx.requests.length, 2, 'one request per event');
  const req = rx.requests[0];
  t.equal(req?.headers['content-type'], EVENTS_MEDIA_TYPE);
  t.equal(req?.headers.authorization, 'Bearer s3cret');
  t.equal(req?.headers['x-multi'], 'a, b');
  t.match(req?.body, /^\{\n {3}"events": \[\n {6}\{\n {9}"id"/, 'indented with three spaces, as Go MarshalIndent writes it');
  t.same(Object.keys(got[0] ?? {}), ['id', 'timestamp', 'action', 'target', 'request', 'actor', 'source']);
  t.same(got[0]?.target, {
    mediaType: 'application/octet-stream',
    size: 12,
    digest: D1,
    length: 12,
    repository: 'a/b',
    url: `http://registry.test:5000/v2/a/b/blobs/${D1}`,
  });
  t.same(got[0]?.request, { id: 'req-1', addr: '127.0.0.1:4242', host: 'registry.test:5000', method: 'PUT', useragent: 'test-agent' });
  t.same(got[0]?.actor, { name: 'alice' });
  t.match(got[0]?.source, { addr: /:5000$/, instanceID: /^[0-9a-f-]{36}$/ });
  t.match(got[0]?.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  t.same(
    Object.keys((got[1]?.target as object) ?? {}),
    ['mediaType', 'size', 'digest', 'length', 'repository', 'url', 'tag'],
    'references only when asked',
  );
  // The receiver has the body before berth has its answer: the counters follow a moment later.
  while ((await metric(registry, 'berth_events_pending', 'rx')) !== 0) await new Promise((r) => setTimeout(r, 20));
  t.equal(await metric(registry, 'berth_events_delivered_total', 'rx'), 2);
});

t.test('receiver down, then up: retried with backoff, delivered in order, each once, metrics follow', async (t) => {
  const rx = await startEventReceiver(t);
  rx.setStatus(503);
  const { events, registry } = await setup(t, [{ name: 'rx', url: rx.url, timeout: '1s', threshold: 2, backoff: '100ms' }]);
  for (let i = 0; i < 5; i++) await events.emit('pull', { repository: `r/${i}`, digest: D1, mediaType: 'm', size: 1, kind: 'blob' }, ctx);
  while (rx.requests.length < 4) await new Promise((r) => setTimeout(r, 20));
  t.equal(rx.events().length, 0, 'nothing accepted while the receiver fails');
  t.ok(
    rx.requests.every((r) => (JSON.parse(r.body) as { events: { target: { repository: string } }[] }).events[0]?.target.repository === 'r/0'),
    'the head event is retried, never skipped',
  );
  t.equal(await metric(registry, 'berth_events_pending', 'rx'), 5);
  t.ok(((await metric(registry, 'berth_events_failed_total', 'rx')) ?? 0) >= 4, 'failures counted');
  t.ok(((await metric(registry, 'berth_events_oldest_pending_age_seconds', 'rx')) ?? 0) > 0, 'oldest pending age');
  rx.setStatus(200);
  const got = await rx.waitFor((e) => e.length >= 5);
  while ((await metric(registry, 'berth_events_pending', 'rx')) !== 0) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 200));
  t.same(
    rx.events().map((e) => (e.target as { repository: string }).repository),
    ['r/0', 'r/1', 'r/2', 'r/3', 'r/4'],
    'in order, once each',
  );
  t.equal(new Set(got.map((e) => e.id)).size, 5, 'distinct ids');
  t.equal(await metric(registry, 'berth_events_pending', 'rx'), 0);
  t.equal(await metric(registry, 'berth_events_oldest_pending_age_seconds', 'rx'), 0);
});

t.test('a receiver that does not answer times out and is retried', async (t) => {
  const rx = await startEventReceiver(t);
  const { createServer } = await import('node:http');
  let hung = 0;
  const silent = createServer(() => void hung++);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => {
    silent.closeAllConnections();
    silent.close();
  });
  const port = (silent.address() as { port: number }).port;
  const { events } = await setup(t, [
    { name: 'slow', url: `http://127.0.0.1:${port}/`, timeout: '100ms', threshold: 1, backoff: '50ms' },
    { name: 'fast', url: rx.url, timeout: '1s' },
  ]);
  await events.emit('push', { repository: 'a', digest: D1, mediaType: 'm', size: 1, kind: 'blob' }, ctx);
  await rx.waitFor((e) => e.length === 1);
  while (hung < 2) await new Promise((r) => setTimeout(r, 20));
  t.pass('the hanging endpoint was tried again after its timeout; the other endpoint got its event meanwhile');
});

t.test('filters: ignoredmediatypes, ignore.mediatypes, ignore.actions, disabled endpoints', async (t) => {
  const all = await startEventReceiver(t);
  const filtered = await startEventReceiver(t);
  const disabled = await startEventReceiver(t);
  const { events } = await setup(t, [
    { name: 'all', url: all.url },
    {
      name: 'filtered',
      url: filtered.url,
      ignoredmediatypes: ['application/octet-stream'],
      ignore: { mediatypes: ['application/x-other'], actions: ['pull', 'mount'] },
    },
    { name: 'off', url: disabled.url, disabled: true },
  ]);
  await events.emit('push', { repository: 'a', digest: D1, mediaType: 'application/octet-stream', size: 1, kind: 'blob' }, ctx);
  await events.emit('push', { repository: 'a', digest: D2, mediaType: 'application/x-other', size: 1, kind: 'manifest' }, ctx);
  await events.emit('pull', { repository: 'a', digest: D2, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 1, kind: 'manifest' }, ctx);
  await events.emit('mount', { repository: 'a', digest: D1, mediaType: 'application/octet-stream', size: 1, kind: 'blob', fromRepository: 'b' }, ctx);
  await events.emit('push', { repository: 'a', digest: D2, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 1, kind: 'manifest' }, ctx);
  await events.emit('delete', { repository: 'a', digest: D2, kind: 'manifest' }, ctx);
  await all.waitFor((e) => e.length === 6);
  await filtered.waitFor((e) => e.length === 2);
  await new Promise((r) => setTimeout(r, 300));
  t.same(
    filtered.events().map((e) => `${String(e.action)} ${String((e.target as { mediaType?: string }).mediaType)}`),
    ['push application/vnd.oci.image.manifest.v1+json', 'delete undefined'],
  );
  t.equal(all.events().length, 6);
  t.equal(disabled.requests.length, 0, 'a disabled endpoint gets nothing');
});

t.test('references only with events.includereferences; audit lines for changes, with user, address and request id', async (t) => {
  const rx = await startEventReceiver(t);
  const { events } = await setup(t, [{ name: 'rx', url: rx.url }], { events: { includereferences: true } });
  const refs = [{ mediaType: 'application/vnd.oci.image.config.v1+json', size: 2, digest: D1 }];
  await events.emit(
    'push',
    { repository: 'a', digest: D2, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 3, kind: 'manifest', tag: 't', references: refs },
    ctx,
  );
  const [e] = await rx.waitFor((x) => x.length === 1);
  t.same((e?.target as { references: unknown }).references, refs);

  const dir = await mkdtemp(join(tmpdir(), 'berth-audit-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
  const audit = new AuditLog(logger, { file: join(dir, 'sub', 'audit.log') });
  const sink = new RegistryEvents({
    notifications: { endpoints: [], includeReferences: false },
    queue: null,
    metrics: await createEventMetrics(new Registry()),
    logger,
    audit,
    listenAddr: ':5000',
  });
  await sink.emit('push', { repository: 'a', digest: D2, mediaType: 'm', size: 3, kind: 'manifest', tag: 't' }, ctx);
  await sink.emit('push', { repository: 'a', digest: D1, mediaType: 'm', size: 3, kind: 'blob' }, ctx);
  await sink.emit('pull', { repository: 'a', digest: D1, mediaType: 'm', size: 3, kind: 'blob' }, ctx);
  await sink.emit('delete', { repository: 'a', tag: 't' }, ctx);
  await sink.emit('delete', { repository: 'a', digest: D2, kind: 'manifest' }, ctx);
  await sink.emit('delete', { repository: 'a', digest: D1, kind: 'blob' }, ctx);
  await sink.emit('delete', { repository: 'a' }, ctx);
  await sink.emit('mount', { repository: 'a', digest: D1, kind: 'blob', fromRepository: 'b' }, ctx);
  await sink.close();
  const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(
    parsed.map((l) => l.action),
    ['manifest push', 'tag delete', 'manifest delete', 'blob delete', 'repository delete', 'blob mount'],
    'one line per change; pulls and blob uploads are not changes of record',
  );
  t.match(parsed[0], { logger: 'audit', msg: 'audit', user: 'alice', addr: '127.0.0.1:4242', reqId: 'req-1', repository: 'a', digest: D2, tag: 't' });
  const fileLines = (await readFile(join(dir, 'sub', 'audit.log'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(
    fileLines.map((l) => l.action),
    parsed.map((l) => l.action),
    'berth.audit.file gets the same lines',
  );
  t.match(fileLines[0], { logger: 'audit', user: 'alice', reqId: 'req-1' });
});

t.test('config: registry:2 keys, durations, fail closed on bad endpoints', async (t) => {
  const warnings: string[] = [];
  const n = parseNotifications(
    {
      events: { includereferences: true },
      endpoints: [
        { name: 'a b/c', url: 'https://hooks.example/x', timeout: '500ms', threshold: 5, backoff: '1m30s', ignoredmediatypes: 'x', bogus: 1 },
      ],
    },
    (m) => warnings.push(m),
  );
  t.match(n.endpoints[0], { name: 'a b/c', timeoutMs: 500, threshold: 5, backoffMs: 90_000, ignoredMediaTypes: ['x'], disabled: false });
  t.match(n.endpoints[0]?.queueName, /^a_b_c-[0-9a-f]{8}$/);
  t.equal(n.includeReferences, true);
  t.same(warnings, ['notifications.endpoints[0].bogus: unknown configuration key, ignored']);
  const bad: [unknown, RegExp][] = [
    [{ endpoints: [{ url: 'http://x' }] }, /notifications\.endpoints\[0\]\.name: required/],
    [{ endpoints: [{ name: 'a' }] }, /endpoints\[0\]\.url: required/],
    [{ endpoints: [{ name: 'a', url: 'ftp://x' }] }, /endpoints\[0\]\.url: expected an http or https URL/],
    [
      {
        endpoints: [
          { name: 'a', url: 'http://x' },
          { name: 'a', url: 'http://y' },
        ],
      },
      /endpoints\[1\]\.name: "a" is used by two endpoints/,
    ],
    [{ endpoints: [{ name: 'a', url: 'http://x', ignore: { actions: ['pul'] } }] }, /endpoints\[0\]\.ignore\.actions/],
    [{ endpoints: [{ name: 'a', url: 'http://x', timeout: 'soon' }] }, /endpoints\[0\]\.timeout/],
    [{ endpoints: [{ name: 'a', url: 'http://x', headers: { 'X-A': ['a\r\nb'] } }] }, /headers\.X-A/],
    [{ endpoints: 'x' }, /notifications\.endpoints: expected a list/],
  ];
  for (const [raw, re] of bad) t.throws(() => parseNotifications(raw, () => undefined), re);
});

t.test('the commented notifications and berth.audit examples in config.example.yaml load without warnings', async (t) => {
  const { parse } = await import('yaml');
  const text = await readFile(new URL('../../../config.example.yaml', import.meta.url), 'utf8');
  const block = (start: RegExp): string => {
    const lines = text.split('\n');
    const i = lines.findIndex((l) => start.test(l));
    const out: string[] = [];
    for (const l of lines.slice(i)) {
      if (!/^\s*#/.test(l)) break;
      out.push(l.replace(/^(\s*)# ?/, '$1'));
    }
    return out.join('\n');
  };
  const warnings: string[] = [];
  const raw = parse(block(/^# notifications:/)) as { notifications: unknown };
  const n = parseNotifications(raw.notifications, (m) => warnings.push(m));
  t.equal(n.endpoints.length, 1);
  t.same(n.endpoints[0]?.ignoredActions, ['pull']);
  const { parseAuditConfig } = await import('../../src/events/config.js');
  const audit = parse(block(/^ {2}# audit:/).replace(/^ {2}/gm, '')) as Record<string, unknown>;
  t.same(
    parseAuditConfig(audit, (m) => warnings.push(m)),
    { file: '/var/log/berth/audit.log' },
  );
  t.same(warnings, []);
});

t.test('berth serve stops at startup naming the key of a bad notifications endpoint (fail closed)', async (t) => {
  const { runBerth } = await import('../helpers/berth-process.js');
  const { writeFile } = await import('node:fs/promises');
  const dir = await mkdtemp(join(tmpdir(), 'berth-events-cfg-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.yml');
  await writeFile(
    file,
    `storage: {filesystem: {rootdirectory: ${join(dir, 'data')}}}\nhttp: {addr: "127.0.0.1:0"}\nnotifications:\n  endpoints:\n    - name: hook\n      url: ftp://hooks.example/x\n`,
  );
  const run = await runBerth(['serve'], { env: { BERTH_CONFIG: file } });
  t.not(run.code, 0);
  t.match(run.output, /notifications\.endpoints\[0\]\.url/);
});
