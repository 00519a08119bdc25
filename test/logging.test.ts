import t from 'tap';
import { PassThrough } from 'node:stream';
import { configFrom } from '../src/config/config.js';
import { createLogger } from '../src/logging.js';
import { writeUsers } from './helpers/auth.js';
import { startBerth } from './helpers/berth.js';
import { tempDir } from './helpers/ports.js';

function capture(): { stream: PassThrough; lines: () => string[] } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (c: Buffer) => (text += c.toString()));
  return { stream, lines: () => text.split('\n').filter((l) => l.length > 0) };
}

const tick = () => new Promise((r) => setTimeout(r, 50));

t.test('log.formatter text writes one readable line per record; json writes JSON', async (t) => {
  const text = capture();
  createLogger(configFrom({ log: { formatter: 'text', fields: { service: 'registry' } } }), text.stream).info(
    { status: 201, url: '/v2/a b' },
    'request',
  );
  await tick();
  t.match(text.lines()[0], /^\d{4}-\d\d-\d\dT[\d:.]+Z INFO request service=registry status=201 url="\/v2\/a b"$/);
  const json = capture();
  createLogger(configFrom({ log: { level: 'debug' } }), json.stream).debug({ a: 1 }, 'hello');
  await tick();
  const rec = JSON.parse(json.lines()[0] as string) as Record<string, unknown>;
  t.equal(rec.msg, 'hello');
  t.equal(rec.a, 1);
});

t.test('credentials are redacted', async (t) => {
  const out = capture();
  createLogger(configFrom({}), out.stream).info({ req: { headers: { authorization: 'Bearer secret-token' } }, password: 'hunter2' }, 'x');
  await tick();
  t.notMatch(out.lines().join('\n'), /secret-token|hunter2/);
});

t.test('one access-log line per request, carrying the request id the response echoes', async (t) => {
  const out = capture();
  const { pino } = await import('pino');
  const logger = pino({ level: 'info' }, out.stream);
  const b = await startBerth(t, { log: { level: 'info', accesslog: { disabled: false } } }, { logger });
  const res = await fetch(`${b.url}/v2/nope/manifests/latest`, { headers: { 'x-request-id': 'abc-123' } });
  t.equal(res.status, 404);
  t.equal(res.headers.get('x-request-id'), 'abc-123');
  await tick();
  const access = out
    .lines()
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r.msg === 'request');
  t.equal(access.length, 1);
  t.match(access[0], { reqId: 'abc-123', method: 'GET', status: 404, route: 'manifest', url: '/v2/nope/manifests/latest' });
});

t.test("the access line is the JSON line pino writes, with the logger's fields, quotes in values escaped", async (t) => {
  const out = capture();
  const { pino } = await import('pino');
  const logger = pino({ level: 'info', base: { service: 'registry', zone: 'b' } }, out.stream);
  const b = await startBerth(t, { log: { level: 'info', accesslog: { disabled: false } } }, { logger });
  const ua = 'evil "agent" \\ {"x":1}';
  const res = await fetch(`${b.url}/v2/`, { headers: { 'user-agent': ua, 'x-request-id': 'q"1' } });
  t.equal(res.status, 200);
  await res.arrayBuffer();
  await tick();
  const lines = out.lines().filter((l) => l.includes('"msg":"request"'));
  t.equal(lines.length, 1);
  const rec = JSON.parse(lines[0] as string) as Record<string, unknown>;
  t.same(
    Object.keys(rec),
    ['level', 'time', 'service', 'zone', 'reqId', 'method', 'url', 'status', 'ms', 'route', 'remote', 'ua', 'msg'],
    "pino's order",
  );
  t.match(rec, {
    level: 30,
    service: 'registry',
    zone: 'b',
    reqId: 'q"1',
    method: 'GET',
    url: '/v2/',
    status: 200,
    route: 'base',
    ua,
    msg: 'request',
  });
  t.match(rec.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.type(rec.ms, 'number');
});

t.test('no access lines when the log level is above info', async (t) => {
  const out = capture();
  const { pino } = await import('pino');
  const logger = pino({ level: 'warn' }, out.stream);
  const b = await startBerth(t, { log: { level: 'warn', accesslog: { disabled: false } } }, { logger });
  await (await fetch(`${b.url}/v2/`)).arrayBuffer();
  await tick();
  t.same(
    out.lines().filter((l) => l.includes('"msg":"request"')),
    [],
  );
});

t.test("a request's own log lines carry its request id (request.log is made on first use)", async (t) => {
  const out = capture();
  const { pino } = await import('pino');
  const logger = pino({ level: 'debug' }, out.stream);
  const b = await startBerth(t, { log: { level: 'debug', accesslog: { disabled: false } } }, { logger });
  for (const id of ['first-1', 'second-2']) {
    const res = await fetch(`${b.url}/v2/nope/manifests/latest`, { headers: { 'x-request-id': id } });
    t.equal(res.status, 404);
    await res.arrayBuffer();
  }
  await tick();
  const records = out.lines().map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const id of ['first-1', 'second-2']) {
    const own = records.filter((r) => r.reqId === id);
    t.ok(
      own.some((r) => r.code === 'MANIFEST_UNKNOWN' && r.level === 20),
      `the error handler's debug line of ${id} names it`,
    );
    t.equal(own.filter((r) => r.msg === 'request').length, 1, `one access line for ${id}`);
  }
});

t.test('the access log line carries the authenticated user as auth.user.name (registry:2), none when anonymous', async (t) => {
  const out = capture();
  const { pino } = await import('pino');
  const logger = pino({ level: 'info' }, out.stream);
  const dir = await tempDir(t, 'berth-log-user-');
  const users = await writeUsers(dir, { alice: 'alice-pw' });
  const b = await startBerth(
    t,
    { log: { level: 'info', accesslog: { disabled: false } }, auth: { htpasswd: { realm: 'berth', path: users } } },
    { logger },
  );
  const basic = `Basic ${Buffer.from('alice:alice-pw').toString('base64')}`;
  t.equal((await fetch(`${b.url}/v2/`, { headers: { authorization: basic, 'x-request-id': 'with-user' } })).status, 200);
  t.equal((await fetch(`${b.url}/v2/`, { headers: { 'x-request-id': 'anonymous' } })).status, 401);
  await tick();
  const access = out
    .lines()
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r.msg === 'request');
  t.equal(access.find((r) => r.reqId === 'with-user')?.['auth.user.name'], 'alice');
  const anonymous = access.find((r) => r.reqId === 'anonymous');
  t.ok(anonymous);
  t.notOk(anonymous && 'auth.user.name' in anonymous, 'no user on a refused request');
});
