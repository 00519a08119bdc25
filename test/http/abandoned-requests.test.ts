/**
 * Requests whose client closes the connection before the response ends: fastify runs no onResponse hook for them,
 * yet each gets one access-log line, with status 499, and one 499 in the metrics. Against a real berth over real
 * sockets: the close is the socket's.
 */
import { randomBytes } from 'node:crypto';
import { Agent, get as httpGet } from 'node:http';
import { connect } from 'node:net';
import { PassThrough } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { abandonedRequests, abandonedRequestsPlugin, wasAbandoned } from '../../src/http/abandoned-requests.js';
import { createMetrics, metricsPlugin } from '../../src/http/metrics.js';
import { startBerth, type RunningBerth } from '../helpers/berth.js';
import { RegistryClient } from '../helpers/registry-client.js';
import { dropDownload } from '../helpers/drop-download.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type AccessLine = Record<string, unknown>;

/** A berth with its access log on, written to a stream the test reads. */
async function loggedBerth(t: Test): Promise<{ b: RunningBerth; access: (reqId: string) => AccessLine[] }> {
  const out = new PassThrough();
  let text = '';
  out.on('data', (c: Buffer) => (text += c.toString()));
  const logger = pino({ level: 'info' }, out);
  const b = await startBerth(t, { log: { level: 'info', accesslog: { disabled: false } } }, { logger });
  const access = (reqId: string): AccessLine[] =>
    text
      .split('\n')
      .filter((l) => l.includes('"msg":"request"'))
      .map((l) => JSON.parse(l) as AccessLine)
      .filter((r) => r.reqId === reqId);
  return { b, access };
}

/**
 * The access lines of `reqId` once at least one is written (at most 5 s), then after a further pause: a second line
 * for the same request would have been written by then.
 */
async function settledLines(access: (reqId: string) => AccessLine[], reqId: string): Promise<AccessLine[]> {
  const deadline = Date.now() + 5000;
  while (access(reqId).length === 0 && Date.now() < deadline) await sleep(20);
  await sleep(300);
  return access(reqId);
}

/** The count of `series` in berth's /metrics, 0 when absent. */
async function metricCount(b: RunningBerth, series: string): Promise<number> {
  const text = await (await fetch(`${b.url}/metrics`)).text();
  for (const line of text.split('\n')) if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  return 0;
}

t.test('a client that drops a blob GET mid-download gets one access line, status 499', async (t) => {
  const { b, access } = await loggedBerth(t);
  // Larger than the loopback socket buffers can hold: the response cannot be finished when the client leaves.
  const blob = randomBytes(64 * 1024 * 1024);
  const { digest } = await new RegistryClient(b.url).pushBlob('big/image', blob);
  const port = Number(new URL(b.url).port);
  const received = await dropDownload(port, `/v2/big/image/blobs/${digest}`, 1024 * 1024, {
    'x-request-id': 'dropped-get',
    'user-agent': 'quitter/1',
  });
  t.ok(received < blob.length, 'the client left before the end of the body');
  const lines = await settledLines(access, 'dropped-get');
  t.equal(lines.length, 1, 'one access line');
  t.match(lines[0], { method: 'GET', url: `/v2/big/image/blobs/${digest}`, status: 499, route: 'blob', remote: '127.0.0.1', ua: 'quitter/1' });
  t.type(lines[0]?.ms, 'number');
  t.equal(await metricCount(b, 'berth_http_requests_total{method="GET",route="blob",status="499"}'), 1, 'counted once as 499');
  t.equal(await metricCount(b, 'berth_http_requests_total{method="GET",route="blob",status="200"}'), 0, 'and not as 200');
});

t.test('a client that drops a PATCH halfway through its declared body gets one access line, status 499', async (t) => {
  const { b, access } = await loggedBerth(t);
  const start = await fetch(`${b.url}/v2/half/image/blobs/uploads/`, { method: 'POST' });
  t.equal(start.status, 202);
  const location = start.headers.get('location') ?? '';
  const path = new URL(location, b.url).pathname + new URL(location, b.url).search;
  const declared = 8 * 1024 * 1024;
  const socket = connect(Number(new URL(b.url).port), '127.0.0.1');
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  socket.write(
    `PATCH ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: dropped-patch\r\nContent-Type: application/octet-stream\r\n` +
      `Content-Length: ${declared}\r\n\r\n`,
  );
  await new Promise<void>((resolve) => socket.write(randomBytes(declared / 2), () => resolve()));
  // The handler is receiving the body when the client leaves.
  await sleep(200);
  socket.destroy();
  const lines = await settledLines(access, 'dropped-patch');
  t.equal(lines.length, 1, 'one access line');
  t.match(lines[0], { method: 'PATCH', url: path, status: 499, route: 'upload' });
  t.equal(await metricCount(b, 'berth_http_requests_total{method="PATCH",route="upload",status="499"}'), 1, 'counted once as 499');
});

t.test('a finished request logs its own status once, also when its keep-alive connection closes later', async (t) => {
  const { b, access } = await loggedBerth(t);
  const blob = randomBytes(8 * 1024 * 1024);
  const { digest } = await new RegistryClient(b.url).pushBlob('kept/image', blob);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const port = Number(new URL(b.url).port);
  const get = (path: string, reqId: string) =>
    new Promise<{ status: number; bytes: number }>((resolve, reject) => {
      httpGet({ host: '127.0.0.1', port, path, agent, headers: { 'x-request-id': reqId } }, (res) => {
        let bytes = 0;
        res.on('data', (c: Buffer) => (bytes += c.length));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes }));
      }).on('error', reject);
    });
  t.same(await get('/v2/', 'kept-base'), { status: 200, bytes: 2 });
  t.same(await get(`/v2/kept/image/blobs/${digest}`, 'kept-blob'), { status: 200, bytes: blob.length });
  t.equal(await get('/v2/kept/image/manifests/nope', 'kept-404').then((r) => r.status), 404);
  // The connection the three requests shared closes now, after their responses ended.
  agent.destroy();
  await sleep(100);
  for (const [reqId, status] of [
    ['kept-base', 200],
    ['kept-blob', 200],
    ['kept-404', 404],
  ] as const) {
    const lines = await settledLines(access, reqId);
    t.equal(lines.length, 1, `one access line for ${reqId}`);
    t.equal(lines[0]?.status, status, `${reqId} logged with its status`);
  }
  t.equal(await metricCount(b, 'berth_http_requests_total{method="GET",route="blob",status="499"}'), 0, 'no 499 counted');
});

t.test('one close listener per connection, however many requests it carries and whatever listens', async (t) => {
  const listenersOn = async (install: (app: FastifyInstance) => Promise<void>): Promise<number[]> => {
    const app = Fastify();
    await install(app);
    app.get('/', async (request) => ({ listeners: request.raw.socket.listenerCount('close') }));
    await app.listen({ host: '127.0.0.1', port: 0 });
    t.teardown(() => app.close());
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    t.teardown(() => agent.destroy());
    const counts: number[] = [];
    for (let i = 0; i < 3; i++) {
      counts.push(
        await new Promise<number>((resolve, reject) => {
          httpGet({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
            let body = '';
            res.on('data', (c: Buffer) => (body += c.toString()));
            res.on('end', () => resolve((JSON.parse(body) as { listeners: number }).listeners));
          }).on('error', reject);
        }),
      );
    }
    return counts;
  };
  const [bare] = await listenersOn(async () => {});
  const tracked = await listenersOn(async (app) => {
    await app.register(metricsPlugin(await createMetrics({ defaultMetrics: false }), { serve: false }));
    await app.register(abandonedRequestsPlugin);
    abandonedRequests(app).on(() => {});
  });
  t.same(tracked, [bare! + 1, bare! + 1, bare! + 1], 'the metrics and another listener share one close listener, added once');
});

t.test('listeners get each abandoned request once, marked as abandoned should fastify end it later', async (t) => {
  const app = Fastify();
  const reported: string[] = [];
  const ended: Array<{ url: string; abandoned: boolean }> = [];
  abandonedRequests(app).on((request, reply) => reported.push(`${request.url} ${String(wasAbandoned(reply))}`));
  app.addHook('onResponse', (request, reply, done) => {
    ended.push({ url: request.url, abandoned: wasAbandoned(reply) });
    done();
  });
  let late: () => void = () => {};
  const lateEnd = new Promise<void>((resolve) => (late = resolve));
  app.get('/quick', async () => 'ok');
  app.get('/slow', async (request, reply) => {
    await new Promise((resolve) => request.raw.socket.once('close', resolve));
    // A response ending after its client left (as on a write error): fastify runs the onResponse hooks then.
    setImmediate(() => {
      reply.raw.emit('error', new Error('late'));
      late();
    });
    return reply;
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  let answered = '';
  socket.on('data', (c: Buffer) => (answered += c.toString('latin1')));
  socket.write('GET /quick HTTP/1.1\r\nHost: x\r\n\r\n');
  while (!answered.endsWith('ok')) await sleep(10);
  socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
  await sleep(100);
  socket.destroy();
  await lateEnd;
  await sleep(50);
  t.same(reported, ['/slow true'], 'the abandoned request only, once');
  t.same(ended, [
    { url: '/quick', abandoned: false },
    { url: '/slow', abandoned: true },
  ]);
});
