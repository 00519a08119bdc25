/**
 * Requests whose client closes the connection before the response ends: fastify runs no onResponse hook for them;
 * the app's one tracker reports them when the connection closes. Over real sockets: the close is the socket's.
 */
import { Agent, get as httpGet } from 'node:http';
import { connect } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import t from 'tap';
import { abandonedRequests, abandonedRequestsPlugin, wasAbandoned } from '../../src/http/abandoned-requests.js';
import { createMetrics, metricsPlugin } from '../../src/http/metrics.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
