/**
 * The pushing side of `npm run bench`, run as its own process so the client never shares a CPU budget (or a heap)
 * with the bench driver: `node push-client.js URL REPO BYTES [CHUNK_BYTES]`.
 *
 * Generates a fresh random 1 MiB block (so every run pushes a blob no server has seen), repeats it to BYTES, hashes
 * it before the clock starts, then times POST + PUT with the whole body (what a monolithic push is for registry:2),
 * or with CHUNK_BYTES, POST + one PATCH per CHUNK_BYTES (`Content-Range`) + PUT without a body (a chunked push),
 * and prints `{"seconds":S,"digest":"sha256:..."}` on stdout.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';

const MiB = 1024 * 1024;

function request(
  url: string,
  method: string,
  headers: http.OutgoingHttpHeaders,
  body?: { block: Buffer; size: number },
): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (!body) {
      req.end();
      return;
    }
    let off = 0;
    const pump = (): void => {
      while (off < body.size) {
        const piece = body.block.subarray(0, Math.min(body.block.length, body.size - off));
        off += piece.length;
        if (!req.write(piece)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
}

async function main(): Promise<void> {
  const [url, repo, bytes, chunkBytes] = process.argv.slice(2);
  if (!url || !repo || !bytes) throw new Error('usage: push-client URL REPO BYTES [CHUNK_BYTES]');
  const size = Number(bytes);
  const block = randomBytes(Math.min(MiB, size));
  const hash = createHash('sha256');
  for (let off = 0; off < size; off += block.length) hash.update(block.subarray(0, Math.min(block.length, size - off)));
  const digest = `sha256:${hash.digest('hex')}`;

  const start = process.hrtime.bigint();
  const post = await request(`${url}/v2/${repo}/blobs/uploads/`, 'POST', { 'content-length': 0 });
  if (post.status !== 202) throw new Error(`POST answered ${post.status}`);
  let location = new URL(String(post.headers.location), url);
  const chunk = chunkBytes ? Number(chunkBytes) : 0;
  if (chunk > 0) {
    // Each PATCH body starts at the block's beginning: the bytes match the digest when chunks are whole blocks.
    if (chunk % block.length !== 0) throw new Error(`CHUNK_BYTES must be a multiple of ${block.length}`);
    for (let off = 0; off < size; off += chunk) {
      const n = Math.min(chunk, size - off);
      const headers = { 'content-type': 'application/octet-stream', 'content-length': n, 'content-range': `${off}-${off + n - 1}` };
      const patch = await request(location.href, 'PATCH', headers, { block, size: n });
      if (patch.status !== 202) throw new Error(`PATCH answered ${patch.status}`);
      location = new URL(String(patch.headers.location), url);
    }
  }
  location.searchParams.set('digest', digest);
  const body = chunk > 0 ? undefined : { block, size };
  const res = await request(location.href, 'PUT', { 'content-type': 'application/octet-stream', 'content-length': body ? size : 0 }, body);
  if (res.status !== 201) throw new Error(`PUT answered ${res.status}`);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  process.stdout.write(`${JSON.stringify({ seconds, digest })}\n`);
}

await main();
