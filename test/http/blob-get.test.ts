/**
 * Blob GETs larger than the buffers the filesystem reader sends them from (issue 16: the reader reuses a few 1 MiB
 * buffers instead of allocating one per chunk). A buffer overwritten before the socket took its bytes, a range cut
 * at a buffer edge, or a file left open after the client went away would each show here as wrong bytes, a wrong
 * length or a leaked descriptor.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readlinkSync } from 'node:fs';
import { get as httpGet, type IncomingMessage } from 'node:http';
import t from 'tap';
import { startBerth } from '../helpers/berth.js';
import { sha256 } from '../helpers/digest.js';
import { RegistryClient } from '../helpers/registry-client.js';

const MiB = 1024 * 1024;
/** More than the reader's buffers hold together, and not a multiple of their size. */
const SIZE = 9 * MiB + 321;

/** GET `url` with `headers`, reading the body slowly: a pause after each MiB, so the server's writes queue up. */
function slowGet(url: string, headers: Record<string, string> = {}): Promise<{ res: IncomingMessage; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpGet(url, { headers }, (res) => {
      const chunks: Buffer[] = [];
      let sinceLastPause = 0;
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        sinceLastPause += chunk.length;
        if (sinceLastPause >= MiB) {
          sinceLastPause = 0;
          res.pause();
          setTimeout(() => res.resume(), 40);
        }
      });
      res.on('end', () => resolve({ res, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** Descriptors of this process open on files below `dir`. */
function openBelow(dir: string): string[] {
  const open: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir)) open.push(target);
    } catch {
      // closed while listing
    }
  }
  return open;
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

t.test('a large blob reaches fast, slow and parallel readers whole, ranges cut anywhere, HEAD sends no body', async (t) => {
  const b = await startBerth(t);
  const client = new RegistryClient(b.url);
  const blob = randomBytes(SIZE);
  const { digest } = await client.pushBlob('big/blob', blob);
  const url = `${b.url}/v2/big/blob/blobs/${digest}`;

  const [fast, slow, slow2] = await Promise.all([
    fetch(url).then(async (r) => ({ r, body: Buffer.from(await r.arrayBuffer()) })),
    slowGet(url),
    slowGet(url),
  ]);
  t.equal(fast.r.status, 200);
  t.equal(fast.r.headers.get('content-length'), String(SIZE));
  t.equal(fast.r.headers.get('docker-content-digest'), digest);
  t.equal(sha256(fast.body), digest, 'a fast reader gets every byte');
  for (const [name, got] of [
    ['a slow reader', slow],
    ['a second slow reader at the same time', slow2],
  ] as const) {
    t.equal(got.res.statusCode, 200);
    t.equal(got.body.length, SIZE, `${name} gets the whole length`);
    t.ok(got.body.equals(blob), `${name} gets exactly the stored bytes`);
  }

  // Ranges: across buffer edges, ending on one, a single byte at the end, a suffix.
  const ranges: Array<[string, number, number]> = [
    [`bytes=${MiB - 10}-${5 * MiB + 4}`, MiB - 10, 5 * MiB + 5],
    [`bytes=${MiB}-${2 * MiB - 1}`, MiB, 2 * MiB],
    [`bytes=${SIZE - 1}-`, SIZE - 1, SIZE],
    ['bytes=-700', SIZE - 700, SIZE],
    [`bytes=3-${SIZE + 1000}`, 3, SIZE],
  ];
  let rangedBytes = 0;
  for (const [header, start, end] of ranges) {
    const got = await slowGet(url, { Range: header });
    t.equal(got.res.statusCode, 206, header);
    t.equal(got.res.headers['content-range'], `bytes ${start}-${end - 1}/${SIZE}`, header);
    t.equal(got.res.headers['content-length'], String(end - start), header);
    t.ok(got.body.equals(blob.subarray(start, end)), `${header}: exactly those bytes`);
    rangedBytes += end - start;
  }

  const head = await fetch(url, { method: 'HEAD' });
  t.equal(head.status, 200);
  t.equal(head.headers.get('content-length'), String(SIZE));
  t.equal((await head.arrayBuffer()).byteLength, 0);

  const text = await (await fetch(`${b.url}/metrics`)).text();
  t.equal(sample(text, 'berth_http_sent_bytes_total{method="GET",route="blob"}'), 3 * SIZE + rangedBytes, 'every byte sent is counted once');
  t.same(openBelow(b.root), [], 'no blob file is left open');
});

t.test('a client that goes away in the middle of a blob: the file is closed, the server serves on', async (t) => {
  const b = await startBerth(t);
  const client = new RegistryClient(b.url);
  const blob = randomBytes(SIZE);
  const { digest } = await client.pushBlob('big/gone', blob);
  const url = `${b.url}/v2/big/gone/blobs/${digest}`;

  const received = await new Promise<number>((resolve, reject) => {
    const req = httpGet(url, (res) => {
      let got = 0;
      res.on('data', (chunk: Buffer) => {
        got += chunk.length;
        if (got >= 2 * MiB) {
          req.destroy();
          resolve(got);
        }
      });
    });
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
  });
  t.ok(received >= 2 * MiB && received < SIZE, 'the client read part of the body, then hung up');
  let open = openBelow(b.root);
  for (let i = 0; i < 100 && open.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
    open = openBelow(b.root);
  }
  t.same(open, [], 'the blob file is closed');
  t.equal(await client.getBlobDigest('big/gone', digest), digest, 'the next GET gets the whole blob');
});
