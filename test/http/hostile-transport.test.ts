/**
 * A hostile client at the transport: malformed chunked bodies, raw bytes in the request target, absolute-form
 * targets. Against a real `berth serve` process, over raw sockets, because the faults live in Node's HTTP parser.
 */
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { connect } from 'node:net';
import t from 'tap';
import { spawnBerth, type BerthProcess } from '../helpers/berth-process.js';
import { tempDir } from '../helpers/ports.js';

/** Sends `request` as is and resolves with everything the server wrote before it closed the connection. */
function raw(port: number, request: Buffer | string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? undefined : reject(err)));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    // Not `end()`: Node aborts the requests of a client that half-closes before it was answered.
    socket.write(request);
  });
}

function statusOf(answer: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);
}

function errorCodeOf(answer: string): string | undefined {
  const body = answer.slice(answer.indexOf('\r\n\r\n') + 4);
  try {
    return (JSON.parse(body) as { errors?: Array<{ code?: string }> }).errors?.[0]?.code;
  } catch {
    return undefined;
  }
}

async function uploadsInProgress(b: BerthProcess): Promise<number> {
  const text = await (await fetch(`${b.url}/metrics`)).text();
  return Number(/^berth_uploads_in_progress (\d+)/m.exec(text)?.[1] ?? NaN);
}

/**
 * Waits (at most 10 s) until no request is writing upload data. The server answers a malformed body at once, but
 * its handler ends just after; the count going back to 0 is the handler having ended.
 */
async function settled(b: BerthProcess): Promise<number> {
  const deadline = Date.now() + 10_000;
  let n = await uploadsInProgress(b);
  while (n !== 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    n = await uploadsInProgress(b);
  }
  return n;
}

function openFiles(b: BerthProcess): number {
  return readdirSync(`/proc/${b.proc.pid}/fd`).length;
}

const MALFORMED = 'Transfer-Encoding: chunked\r\n\r\nZZ\r\n';

t.test('a malformed chunked body ends the handler: lease released, metric back, no file left open', async (t) => {
  const dir = await tempDir(t, 'berth-hostile-');
  const b = await spawnBerth(t, { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir });
  const start = await fetch(`${b.url}/v2/app/blobs/uploads/`, { method: 'POST' });
  t.equal(start.status, 202);
  const location = start.headers.get('location') ?? '';

  const answer = await raw(b.port, `PATCH ${location} HTTP/1.1\r\nHost: x\r\n${MALFORMED}`);
  t.equal(statusOf(answer), 400, 'the malformed body is refused');
  t.equal(errorCodeOf(answer), 'BAD_REQUEST', 'with the distribution error JSON');
  t.equal(await settled(b), 0, 'berth_uploads_in_progress is back to 0');

  const patch = await fetch(`${b.url}${location}`, { method: 'PATCH', body: 'abc' });
  t.equal(patch.status, 202, 'the same upload takes a PATCH (its lease was released)');
  t.equal(patch.headers.get('range'), '0-2');

  const before = openFiles(b);
  const digest = `sha256:${createHash('sha256').update('x').digest('hex')}`;
  for (let i = 0; i < 200; i++) {
    const path = i % 2 === 0 ? `/v2/app/blobs/uploads/?digest=${digest}` : location;
    const method = i % 2 === 0 ? 'POST' : 'PATCH';
    const a = await raw(b.port, `${method} ${path} HTTP/1.1\r\nHost: x\r\n${MALFORMED}`);
    if (statusOf(a) !== 400) t.fail(`request ${i}: ${a}`);
  }
  t.equal(await settled(b), 0, 'no handler left running after 200 malformed bodies');
  const after = openFiles(b);
  t.ok(after - before < 20, `open files ${before} -> ${after}`);
  const put = await fetch(`${b.url}${location}?digest=sha256:${createHash('sha256').update('abc').digest('hex')}`, { method: 'PUT' });
  t.equal(put.status, 201, 'the upload still completes');
});

t.test('raw UTF-8 in the path gets NAME_INVALID, an absolute-form target is routed like its path', async (t) => {
  const dir = await tempDir(t, 'berth-hostile-');
  const b = await spawnBerth(t, { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir });
  const utf8 = await raw(
    b.port,
    Buffer.concat([Buffer.from('GET /v2/caf'), Buffer.from('é/manifests/latest', 'utf8'), Buffer.from(' HTTP/1.1\r\nHost: x\r\n\r\n')]),
  );
  t.equal(statusOf(utf8), 400);
  t.equal(errorCodeOf(utf8), 'NAME_INVALID', "the error JSON, not fastify's generic body");
  t.match(utf8, /\r\nDocker-Distribution-API-Version: registry\/2\.0\r\n/i);

  const base = await raw(b.port, `GET http://127.0.0.1:${b.port}/v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  t.equal(statusOf(base), 200, 'GET http://host/v2/ is the base endpoint');
  const tags = await raw(b.port, `GET http://registry.example:5000:${b.port}/v2/nope/tags/list?n=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  t.equal(statusOf(tags), 404);
  t.equal(errorCodeOf(tags), 'NAME_UNKNOWN', 'routed to the tags list, not "no such endpoint"');
});
