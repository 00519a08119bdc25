import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { request as httpRequest } from 'node:http';
import t, { type Test } from 'tap';
import Fastify, { type FastifyInstance } from 'fastify';
import { register as globalRegistry } from 'prom-client';
import { configFrom } from '../../src/config/config.js';
import { createMetrics, metricsConfig, metricsPlugin, requestBody, startMetricsServer, type Metrics } from '../../src/http/metrics.js';
import { digestStream, sha256Hex } from '../helpers/digest.js';
import { dropDownload } from '../helpers/drop-download.js';

/** The value of one series in a Prometheus text exposition, or undefined when the series is absent. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

/** A deterministic pseudo-random byte stream of `size` bytes, produced in 64 KiB chunks on demand. */
function generated(size: number, seed: Buffer): Readable {
  let sent = 0;
  let counter = 0;
  return new Readable({
    read() {
      if (sent >= size) {
        this.push(null);
        return;
      }
      const chunk = createHash('sha512').update(seed).update(String(counter++)).digest();
      const block = Buffer.alloc(Math.min(65536, size - sent));
      for (let i = 0; i < block.length; i += chunk.length) chunk.copy(block, i);
      sent += block.length;
      this.push(block);
    },
  });
}

/** A small app shaped like berth's: metrics first, a streaming body parser, routes that set routeKind. */
async function startApp(t: Test, metrics: Metrics, serve = true): Promise<{ app: FastifyInstance; url: string }> {
  const app = Fastify();
  await app.register(metricsPlugin(metrics, { serve }));
  // As berth's routes do: no body parsing; handlers stream the body themselves.
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));
  const seed = Buffer.from('berth');
  app.get('/v2/:name/blobs/:digest', async (request, reply) => {
    request.routeKind = 'blob';
    reply.header('content-type', 'application/octet-stream');
    return reply.send(generated(4 * 1024 * 1024 + 17, seed));
  });
  app.get('/v2/:name/manifests/:ref', async (request) => {
    request.routeKind = 'manifest';
    return { schemaVersion: 2 };
  });
  app.patch('/v2/:name/blobs/uploads/:id', async (request, reply) => {
    request.routeKind = 'upload';
    const { hex, size } = await digestStream(requestBody(request));
    return reply.code(202).send({ sha256: hex, size });
  });
  app.put('/raw', async (request, reply) => {
    // A handler that bypasses the parsed body and reads the socket stream itself must not be disturbed.
    const { hex, size } = await digestStream(request.raw);
    return reply.code(201).send({ sha256: hex, size });
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  return { app, url: `http://127.0.0.1:${address.port}` };
}

t.test('GET /metrics reports requests by method, route kind and status, with latency and bytes', async (t) => {
  const metrics = await createMetrics();
  const { url } = await startApp(t, metrics);

  const blob = await fetch(`${url}/v2/busybox/blobs/sha256:abc`);
  t.equal(blob.status, 200);
  const { size: blobSize } = await digestStream(Readable.fromWeb(blob.body as import('node:stream/web').ReadableStream<Uint8Array>));
  t.equal(blobSize, 4 * 1024 * 1024 + 17, 'the whole streamed body reaches the client');
  t.equal((await fetch(`${url}/v2/busybox/manifests/latest`)).status, 200);
  t.equal((await fetch(`${url}/v2/busybox/manifests/1.36`)).status, 200);
  const notFound = await fetch(`${url}/nothing/here/a8f3e1`);
  t.equal(notFound.status, 404);
  await notFound.arrayBuffer();

  // A chunked upload (no Content-Length), as docker sends blob PATCHes.
  const upload = randomBytes(300_000);
  const patch = await fetch(`${url}/v2/busybox/blobs/uploads/u1`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/octet-stream' },
    body: Readable.toWeb(Readable.from([upload.subarray(0, 100_000), upload.subarray(100_000)])) as ReadableStream<Uint8Array>,
    duplex: 'half',
  } as RequestInit);
  t.equal(patch.status, 202);
  const echoed = (await patch.json()) as { sha256: string; size: number };
  t.same(echoed, { sha256: sha256Hex(upload), size: upload.length }, 'the handler got every byte');

  const res = await fetch(`${url}/metrics`);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  const text = await res.text();

  t.equal(sample(text, 'berth_http_requests_total{method="GET",route="blob",status="200"}'), 1);
  t.equal(
    sample(text, 'berth_http_requests_total{method="GET",route="manifest",status="200"}'),
    2,
    'two tags, one series: the route label is the kind, not the URL',
  );
  t.equal(sample(text, 'berth_http_requests_total{method="PATCH",route="upload",status="202"}'), 1);
  t.equal(sample(text, 'berth_http_requests_total{method="GET",route="unmatched",status="404"}'), 1);
  t.notMatch(text, /a8f3e1|1\.36/, 'raw URLs never become label values');

  t.equal(sample(text, 'berth_http_request_duration_seconds_count{method="GET",route="manifest",status="200"}'), 2);
  const sum = sample(text, 'berth_http_request_duration_seconds_sum{method="GET",route="blob",status="200"}');
  t.ok(sum !== undefined && sum > 0, 'latency observed in seconds');
  t.equal(sample(text, 'berth_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="blob",status="200"}'), 1);

  t.equal(sample(text, 'berth_http_sent_bytes_total{method="GET",route="blob"}'), 4 * 1024 * 1024 + 17, 'streamed bytes out');
  t.equal(sample(text, 'berth_http_sent_bytes_total{method="GET",route="manifest"}'), 2 * Buffer.byteLength('{"schemaVersion":2}'));
  t.equal(sample(text, 'berth_http_received_bytes_total{method="PATCH",route="upload"}'), upload.length, 'chunked bytes in');

  for (const name of ['berth_uploads_in_progress', 'berth_gc_last_run_timestamp_seconds', 'berth_gc_reclaimed_bytes_total']) {
    t.equal(sample(text, name), 0, `${name} is exported from the start`);
  }
  t.match(text, /# TYPE berth_proxy_cache_hits_total counter/);
  t.match(text, /# TYPE berth_storage_errors_total counter/);
  t.match(text, /# TYPE berth_redis_errors_total counter/);
  t.match(text, /^process_cpu_user_seconds_total /m, 'process metrics included by default');
});

t.test('a handler reading request.raw itself is not disturbed by the byte counting', async (t) => {
  const metrics = await createMetrics({ defaultMetrics: false });
  const { url } = await startApp(t, metrics);
  const body = randomBytes(2 * 1024 * 1024);
  const res = await fetch(`${url}/raw`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body });
  t.equal(res.status, 201);
  t.same(await res.json(), { sha256: sha256Hex(body), size: body.length });
});

t.test('requestBody is request.raw, with and without the plugin; with it, its bytes are counted as they arrive', async (t) => {
  const metrics = await createMetrics({ defaultMetrics: false });
  const withPlugin = Fastify();
  await withPlugin.register(metricsPlugin(metrics));
  const plain = Fastify();
  for (const app of [withPlugin, plain]) {
    app.addContentTypeParser('*', (_request, _payload, done) => done(null));
    app.put('/x', async (request) => ({
      raw: requestBody(request) === request.raw,
      ...(await digestStream(requestBody(request)).then(({ hex, size }) => ({ sha256: hex, size }))),
    }));
  }
  t.teardown(() => Promise.all([withPlugin.close(), plain.close()]));
  const body = randomBytes(1000);
  const a = await withPlugin.inject({ method: 'PUT', url: '/x', payload: body, headers: { 'content-type': 'application/octet-stream' } });
  const b = await plain.inject({ method: 'PUT', url: '/x', payload: body, headers: { 'content-type': 'application/octet-stream' } });
  const sha256 = sha256Hex(body);
  t.same(a.json(), { raw: true, sha256, size: 1000 }, 'no stream in between: the handler reads the request itself');
  t.same(b.json(), { raw: true, sha256, size: 1000 });
  t.equal(sample(await metrics.registry.metrics(), 'berth_http_received_bytes_total{method="PUT",route="/x"}'), 1000);
});

t.test('a reader that destroys the counted body ends the request like destroying request.raw', async (t) => {
  const metrics = await createMetrics({ defaultMetrics: false });
  const app = Fastify();
  await app.register(metricsPlugin(metrics));
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));
  let rawClosed: () => void = () => {};
  const closed = new Promise<void>((resolve) => (rawClosed = resolve));
  app.put('/x', async (request) => {
    request.raw.on('close', rawClosed);
    const body = requestBody(request);
    for await (const chunk of body) {
      void chunk;
      body.destroy(new Error('stop'));
      break;
    }
    return 'unreachable for the client';
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  const port = address.port;
  const outcome = await new Promise<string>((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/x', method: 'PUT', headers: { 'content-type': 'application/octet-stream' } });
    req.on('response', (res) => resolve(`response ${res.statusCode}`));
    req.on('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code ?? err.message}`));
    // A body that never ends: only the server giving up ends this request.
    req.write(randomBytes(65536));
  });
  await closed;
  t.match(outcome, /^error /, 'the connection is closed, as when request.raw is destroyed');
});

t.test('the instruments the services use show up with their labels', async (t) => {
  const metrics = await createMetrics({ defaultMetrics: false });
  metrics.uploadsInProgress.inc();
  metrics.uploadsInProgress.inc();
  metrics.uploadsInProgress.dec();
  // The berth_proxy_* series are read at each scrape from the pull-through cache's upstreams() view.
  metrics.mirrorSource = () => [
    {
      name: 'docker.io',
      url: 'http://127.0.0.1:1',
      state: 'reachable',
      rateLimit: { limit: 100, remaining: 7 },
      prefix: '',
      counts: {
        hits: { manifest: 0, blob: 3 },
        misses: { manifest: 1, blob: 0 },
        fetchedBytes: 4096,
        servedBytes: 8192,
        upstreamErrors: 2,
        fillsInProgress: 1,
      },
    },
  ];
  metrics.storageErrors.inc({ driver: 's3', operation: 'putContent' });
  metrics.redisErrors.inc({ operation: 'connect' });
  metrics.gcBytesReclaimed.inc(1234);
  metrics.gcLastRun.set(1_700_000_000);
  const text = await metrics.registry.metrics();
  t.equal(sample(text, 'berth_uploads_in_progress'), 1);
  t.equal(sample(text, 'berth_proxy_cache_hits_total{upstream="docker.io",kind="blob"}'), 3);
  t.equal(sample(text, 'berth_proxy_cache_misses_total{upstream="docker.io",kind="manifest"}'), 1);
  t.equal(sample(text, 'berth_proxy_cache_misses_total{upstream="docker.io",kind="blob"}'), 0);
  t.equal(sample(text, 'berth_proxy_upstream_fetched_bytes_total{upstream="docker.io"}'), 4096);
  t.equal(sample(text, 'berth_proxy_cache_served_bytes_total{upstream="docker.io"}'), 8192);
  t.equal(sample(text, 'berth_proxy_upstream_errors_total{upstream="docker.io"}'), 2);
  t.equal(sample(text, 'berth_proxy_fills_in_progress{upstream="docker.io"}'), 1);
  t.equal(sample(text, 'berth_proxy_upstream_ratelimit_limit{upstream="docker.io"}'), 100);
  t.equal(sample(text, 'berth_proxy_upstream_ratelimit_remaining{upstream="docker.io"}'), 7);
  t.equal(sample(text, 'berth_storage_errors_total{driver="s3",operation="putContent"}'), 1);
  t.equal(sample(text, 'berth_redis_errors_total{operation="connect"}'), 1);
  t.equal(sample(text, 'berth_gc_reclaimed_bytes_total'), 1234);
  t.equal(sample(text, 'berth_gc_last_run_timestamp_seconds'), 1_700_000_000);
  t.notMatch(text, /^process_/m, 'defaultMetrics: false leaves process metrics out');
});

t.test('each createMetrics has its own registry, never the global one', async (t) => {
  const a = await createMetrics({ defaultMetrics: false });
  const b = await createMetrics({ defaultMetrics: false });
  a.httpRequests.inc({ method: 'GET', route: 'blob', status: '200' });
  t.equal(sample(await a.registry.metrics(), 'berth_http_requests_total{method="GET",route="blob",status="200"}'), 1);
  t.equal(sample(await b.registry.metrics(), 'berth_http_requests_total{method="GET",route="blob",status="200"}'), undefined);
  t.notMatch(await globalRegistry.metrics(), /berth_/);
});

t.test('serve: false records requests but leaves /metrics to the separate listener', async (t) => {
  const metrics = await createMetrics({ defaultMetrics: false });
  const { url } = await startApp(t, metrics, false);
  const res = await fetch(`${url}/metrics`);
  t.equal(res.status, 404);
  await res.arrayBuffer();

  const server = await startMetricsServer(metrics, '127.0.0.1:0');
  t.teardown(() => server.close());
  t.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const scraped = await fetch(`${server.url}/metrics`);
  t.equal(scraped.status, 200);
  t.match(scraped.headers.get('content-type'), /^text\/plain/);
  const text = await scraped.text();
  t.equal(sample(text, 'berth_http_requests_total{method="GET",route="unmatched",status="404"}'), 1);
  const other = await fetch(`${server.url}/v2/`);
  t.equal(other.status, 404);
  await other.arrayBuffer();
  const post = await fetch(`${server.url}/metrics`, { method: 'POST' });
  t.equal(post.status, 405);
  await post.arrayBuffer();
});

t.test('startMetricsServer rejects an address it cannot listen on', async (t) => {
  const metrics = await createMetrics({ defaultMetrics: false });
  const first = await startMetricsServer(metrics, '127.0.0.1:0');
  t.teardown(() => first.close());
  const port = new URL(first.url).port;
  await t.rejects(startMetricsServer(metrics, `127.0.0.1:${port}`), { code: 'EADDRINUSE' });
  await t.rejects(startMetricsServer(metrics, 'nonsense'), /http\.addr/);
});

t.test('berth.metrics config: enabled, path, addr', async (t) => {
  t.same(metricsConfig(configFrom({})), { enabled: true, path: '/metrics' });
  t.same(metricsConfig(configFrom({ berth: { metrics: { enabled: false } } })), { enabled: false, path: '/metrics' });
  t.same(metricsConfig(configFrom({ berth: { metrics: { addr: ':9090', path: '/prom' } } })), {
    enabled: true,
    path: '/prom',
    addr: ':9090',
  });
  t.throws(() => metricsConfig(configFrom({ berth: { metrics: { addr: 'x:y' } } })), /berth\.metrics\.addr/);
  t.throws(() => metricsConfig(configFrom({ berth: { metrics: { path: '/v2/metrics' } } })), /berth\.metrics\.path/);
  t.throws(() => metricsConfig(configFrom({ berth: { metrics: 'yes' } })), /berth\.metrics/);
});

t.test('a client that goes away mid-download releases the source stream and is counted as 499', async (t) => {
  const metrics = await createMetrics({ defaultMetrics: false });
  const app = Fastify();
  await app.register(metricsPlugin(metrics));
  const total = 512 * 1024 * 1024;
  let produced = 0;
  let sourceClosed: () => void = () => {};
  const closed = new Promise<void>((resolve) => (sourceClosed = resolve));
  app.get('/v2/:name/blobs/:digest', async (request, reply) => {
    request.routeKind = 'blob';
    const source = generated(total, Buffer.from('x'));
    source.on('data', (chunk: Buffer) => (produced += chunk.length));
    source.on('close', sourceClosed);
    return reply.send(source);
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  const port = address.port;
  const received = await dropDownload(port, '/v2/big/blobs/sha256:1', 1024 * 1024);
  await closed;
  t.ok(received > 1024 * 1024, 'the client got the start of the body');
  t.ok(produced < total, 'the source was destroyed, not read to the end');
  // The hooks run on the socket's close event, after the source closed; wait for the series to appear.
  let text = '';
  for (let i = 0; i < 50; i++) {
    text = await metrics.registry.metrics();
    if (sample(text, 'berth_http_requests_total{method="GET",route="blob",status="499"}') !== undefined) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  t.equal(sample(text, 'berth_http_requests_total{method="GET",route="blob",status="499"}'), 1);
  t.equal(sample(text, 'berth_http_requests_total{method="GET",route="blob",status="200"}'), undefined);
  const sent = sample(text, 'berth_http_sent_bytes_total{method="GET",route="blob"}') ?? 0;
  t.ok(sent >= received && sent < total, `bytes sent (${sent}) count what went out, not the whole blob`);
});
