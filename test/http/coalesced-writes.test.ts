import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { coalesceWrites } from '../../src/http/coalesced-writes.js';
import { startBerth } from '../helpers/berth.js';
import { tempDir } from '../helpers/ports.js';
import { makeCertificates } from '../helpers/tls-files.js';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

async function serve(t: Test, handler: Handler, coalesce = true): Promise<string> {
  const server = http.createServer(handler);
  if (coalesce) coalesceWrites(server, 'connection');
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  t.teardown(() => server.closeAllConnections());
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A GET with its own keep-alive agent: status, headers, and the whole body. */
async function get(url: string, agent?: http.Agent): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: agent ?? false }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Ends `res` with `body`; returns whether the answer is still held back (its connection still corked). */
function endAndCheck(res: http.ServerResponse, body: string | Buffer): boolean {
  res.end(body);
  return (res.socket?.writableCorked ?? 0) > 0;
}

t.test('an answer ended during a turn is held until the turn ends, then arrives whole', async (t) => {
  const held: boolean[] = [];
  const url = await serve(t, (req, res) => {
    const body = Buffer.from(`answer to ${req.url}`);
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    // Without coalescing Node hands it to the kernel at once.
    held.push(endAndCheck(res, body));
  });
  const answers = await Promise.all(Array.from({ length: 16 }, (_, i) => get(`${url}/r${i}`)));
  t.same(
    answers.map((a) => [a.status, a.body.toString()]),
    Array.from({ length: 16 }, (_, i) => [200, `answer to /r${i}`]),
    'sixteen connections, each its own answer',
  );
  t.same(held, Array(16).fill(true), 'every answer was still held when its handler returned');
});

t.test('many writes on one keep-alive connection keep their order, and a large streamed body arrives intact', async (t) => {
  const big = randomBytes(24 * 1024 * 1024 + 11);
  const url = await serve(t, (req, res) => {
    if (req.url === '/big') {
      res.writeHead(200, { 'content-length': big.length });
      // Pieces of uneven size, written as fast as the socket takes them.
      let at = 0;
      let i = 0;
      const pump = () => {
        while (at < big.length) {
          const n = Math.min(1 + ((i++ * 7919) % 200_000), big.length - at);
          const ok = res.write(big.subarray(at, at + n));
          at += n;
          if (!ok) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
      return;
    }
    // A chunked answer of a thousand small writes.
    res.writeHead(200, { 'content-type': 'text/plain' });
    for (let i = 0; i < 1000; i++) res.write(`${i},`);
    res.end('end');
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const expected = Array.from({ length: 1000 }, (_, i) => `${i},`).join('') + 'end';
  for (let round = 0; round < 3; round++) {
    const small = await get(`${url}/small`, agent);
    t.equal(small.body.toString(), expected, `round ${round}: a thousand writes in order`);
    const large = await get(`${url}/big`, agent);
    t.equal(large.body.length, big.length, `round ${round}: every byte of the large body`);
    t.equal(sha(large.body), sha(big), `round ${round}: the same bytes`);
  }
});

t.test('a connection closed while its answer is held fails that write quietly; the server serves on', async (t) => {
  let closed = 0;
  let errors = 0;
  const url = await serve(t, (req, res) => {
    if (req.url === '/drop') {
      res.on('close', () => closed++);
      res.on('error', () => errors++);
      res.end('never seen');
      // The connection goes before the turn ends: the held write meets a closed socket.
      req.socket.destroy();
      return;
    }
    res.end('still here');
  });
  const dropped = await get(`${url}/drop`).then(
    () => 'answered',
    (err: NodeJS.ErrnoException) => err.code ?? 'error',
  );
  t.not(dropped, 'answered', 'the client saw its connection close');
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.equal(closed, 1, "the response's close event fired");
  t.equal(errors, 0, 'no error event on the response');
  t.equal((await get(`${url}/after`)).body.toString(), 'still here', 'the next connection is served');
});

t.test('Connection: close answers arrive whole before the connection ends', async (t) => {
  const body = randomBytes(300_000);
  const url = await serve(t, (_req, res) => {
    res.writeHead(200, { connection: 'close', 'content-length': body.length });
    res.end(body);
  });
  const answers = await Promise.all(Array.from({ length: 8 }, () => get(url)));
  for (const a of answers) {
    t.equal(a.headers.connection, 'close');
    t.equal(sha(a.body), sha(body));
  }
});

t.test('over TLS the answers are held on the encrypted connection and arrive whole', async (t) => {
  const dir = await tempDir(t, 'berth-coalesce-tls-');
  const certs = await makeCertificates(dir);
  const [cert, key, ca] = await Promise.all([readFile(certs.cert), readFile(certs.key), readFile(certs.caCert)]);
  const held: boolean[] = [];
  const server = https.createServer({ cert, key }, (req, res) => {
    held.push(endAndCheck(res, `secure ${req.url}`));
  });
  coalesceWrites(server, 'secureConnection');
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  t.teardown(() => server.closeAllConnections());
  const port = (server.address() as AddressInfo).port;
  const bodies = await Promise.all(
    Array.from(
      { length: 6 },
      (_, i) =>
        new Promise<string>((resolve, reject) => {
          https
            .get({ host: '127.0.0.1', port, path: `/s${i}`, ca, servername: 'localhost', agent: false }, (res) => {
              let text = '';
              res.setEncoding('utf8');
              res.on('data', (c: string) => (text += c));
              res.on('end', () => resolve(text));
            })
            .on('error', reject);
        }),
    ),
  );
  t.same(
    bodies,
    Array.from({ length: 6 }, (_, i) => `secure /s${i}`),
  );
  t.same(held, Array(6).fill(true), 'held until the turn ended');
});

t.test('without coalescing the same answer is written at once (what the first test tells apart)', async (t) => {
  const held: boolean[] = [];
  const url = await serve(t, (_req, res) => void held.push(endAndCheck(res, 'direct')), false);
  t.equal((await get(url)).body.toString(), 'direct');
  t.same(held, [false], 'nothing held');
});

/** Records, for each answer of `server`, whether it was still held back once `res.end` returned. */
function heldAtEnd(server: http.Server): boolean[] {
  const held: boolean[] = [];
  server.prependListener('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
    const end = res.end.bind(res) as (...args: unknown[]) => http.ServerResponse;
    res.end = ((...args: unknown[]) => {
      const out = end(...args);
      held.push((res.socket?.writableCorked ?? 0) > 0);
      return out;
    }) as typeof res.end;
  });
  return held;
}

t.test("berth's server holds its answers to the end of the turn, on HTTP and on HTTPS", async (t) => {
  const plain = await startBerth(t);
  const heldPlain = heldAtEnd(plain.app.server);
  const answers = await Promise.all(Array.from({ length: 4 }, () => fetch(`${plain.url}/v2/`)));
  t.same(
    answers.map((a) => a.status),
    [200, 200, 200, 200],
  );
  t.same(heldPlain, [true, true, true, true], 'HTTP: each answer was held when it ended');

  const dir = await tempDir(t, 'berth-coalesce-app-');
  const certs = await makeCertificates(dir);
  const secure = await startBerth(t, { http: { tls: { certificate: certs.cert, key: certs.key } } });
  const heldSecure = heldAtEnd(secure.app.server);
  const ca = await readFile(certs.caCert);
  const status = await new Promise<number>((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port: Number(new URL(secure.url).port), path: '/v2/', ca, servername: 'localhost', agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      })
      .on('error', reject);
  });
  t.equal(status, 200);
  t.same(heldSecure, [true], 'HTTPS: the answer was held when it ended');
});
