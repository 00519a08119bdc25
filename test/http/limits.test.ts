import t from 'tap';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { startBerth } from '../helpers/berth.js';

t.test('an invalid n is 400 PAGINATION_NUMBER_INVALID on tags and catalog', async (t) => {
  const b = await startBerth(t);
  const blob = Buffer.from('x');
  await fetch(`${b.url}/v2/p/q/blobs/uploads/?digest=sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881`, {
    method: 'POST',
    body: blob,
  });
  for (const path of ['/v2/_catalog?n=abc', '/v2/_catalog?n=-1', '/v2/_catalog?n=1&n=2', '/v2/p/q/tags/list?n=1e3']) {
    const res = await fetch(`${b.url}${path}`);
    t.equal(res.status, 400, path);
    const body = (await res.json()) as { errors: Array<{ code: string }> };
    t.equal(body.errors[0]?.code, 'PAGINATION_NUMBER_INVALID', path);
  }
  t.equal((await fetch(`${b.url}/v2/_catalog?n=0`)).status, 200);
});

t.test('a client that stalls mid-upload is disconnected after berth.idletimeout and frees its upload', async (t) => {
  const b = await startBerth(t, { berth: { idletimeout: '1s' } });
  const post = await fetch(`${b.url}/v2/idle/me/blobs/uploads/`, { method: 'POST' });
  const path = post.headers.get('location') as string;
  const { port } = new URL(b.url);
  const closedAfter = await new Promise<number>((resolve, reject) => {
    const started = Date.now();
    const socket = connect(Number(port), '127.0.0.1', () => {
      // Declare 1 MiB, send 1 KiB, then nothing.
      socket.write(`PATCH ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1048576\r\n\r\n`);
      socket.write(randomBytes(1024));
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(Date.now() - started));
    setTimeout(() => reject(new Error('still connected after 10 s')), 10_000).unref();
  });
  t.ok(closedAfter >= 900 && closedAfter < 8000, `closed after ${closedAfter} ms`);
  // The lease is released: the upload continues from what arrived.
  // The server finishes the aborted PATCH (records the 1 KiB that arrived) just after the socket closes.
  let status = await fetch(`${b.url}${path}`);
  for (let i = 0; i < 50 && status.headers.get('range') === '0-0'; i++) {
    await new Promise((r) => setTimeout(r, 100));
    status = await fetch(`${b.url}${path}`);
  }
  t.equal(status.status, 204);
  t.equal(status.headers.get('range'), '0-1023', 'the bytes that arrived are kept');
  const offset = Number((status.headers.get('range') as string).split('-')[1]) + 1;
  const more = await fetch(`${b.url}${path}`, { method: 'PATCH', body: Buffer.alloc(10), headers: { 'content-range': `${offset}-${offset + 9}` } });
  t.equal(more.status, 202, `the upload is not left busy: ${more.status} ${await more.text()} offset ${offset}`);
});
