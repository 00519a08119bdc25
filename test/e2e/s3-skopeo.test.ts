import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import t from 'tap';
import type { RawSection } from '../../src/config/fields.js';
import { startBerth } from '../helpers/berth.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { blobPath, layoutTagDigest, makeImageLayout, walkBlobs } from '../helpers/oci-layout.js';
import { fileDigest } from '../helpers/digest.js';
import { tempDir } from '../helpers/ports.js';
import { s3StorageSection, startS3Server, type S3Server } from '../helpers/s3-server.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';

/**
 * Issue 3: "skopeo pushes and pulls a multi-layer image (one layer ≥ 64 MiB, sent in chunks smaller than 5 MiB as
 * well as one big PATCH) through berth on S3, digests identical"; "Blob GET streams from S3 … with
 * `storage.redirect` enabled … it answers 307 to a presigned URL"; "`/readyz` … reports S3 reachability".
 * Everything runs against the strict S3-protocol test server (SigV4 checked, 5 MiB minimum part enforced).
 */

// This machine sets AWS_CA_BUNDLE: the in-process SDK must see only what the config passes.
for (const k of Object.keys(process.env)) if (k.startsWith('AWS_') && k !== 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED') delete process.env[k];

const MiB = 1024 * 1024;
const BIG = 64 * MiB + 4321;
const CHUNK = 3 * MiB;

/** The `storage.s3` section for `server`, reached at `endpoint` (the server itself or a proxy in front of it). */
function s3Section(server: S3Server, rootdirectory: string, endpoint = server.endpoint): RawSection {
  return { ...s3StorageSection(server, endpoint), rootdirectory, maxattempts: 2 };
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  /** sha256 of the body, hashed while it streams in. */
  sha256: string;
  bytes: number;
  /** The first 64 KiB of the body as text (error documents). */
  text: string;
}

/** One HTTP request with an optional Buffer or stream body; the answer is hashed as it arrives, never buffered. */
function send(url: string, method: string, headers: Record<string, string> = {}, body?: Buffer | Readable): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const req = httpRequest(url, { method, headers }, (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      let text = '';
      res.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
        if (text.length < 65536) text += chunk.toString('utf8');
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, sha256: `sha256:${hash.digest('hex')}`, bytes, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    else body.pipe(req);
  });
}

/** The S3 key of a blob's data in registry:2's layout under `root`. */
function blobKey(root: string, digest: string): string {
  const hex = digest.split(':')[1] ?? '';
  return `${root}/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
}

t.test('berth on S3: skopeo, chunked and single-PATCH uploads, redirects, readiness', async (t) => {
  const s3 = await startS3Server(t);
  const src = await tempDir(t, 'berth-s3-src-');
  // One layer of 64 MiB and a bit (random, so incompressible), plus two small ones.
  const image = await makeImageLayout(src, { layers: [BIG, 2 * MiB + 7, 1000], tag: 'v1' });
  const bigDigest = image.images[0]?.layers[0] ?? '';
  const bigFile = blobPath(src, bigDigest);
  const bigSize = (await stat(bigFile)).size;
  t.ok(bigSize >= 64 * MiB, `the big layer is ${bigSize} bytes`);

  const berth = await startBerth(t, { storage: { s3: s3Section(s3, 'skopeo') } });

  await t.test('skopeo push and pull with --preserve-digests: identical digests', async (t) => {
    const ref = dockerRef(berth.url, 's3/app', 'v1');
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:v1`, ref], { timeoutMs: 50_000 });
    t.ok(s3.keys().includes(blobKey('skopeo', bigDigest)), 'the big layer is stored at its registry:2 key in the bucket');
    t.same(s3.uploads(), [], 'no multipart upload is left in progress');
    t.same(
      s3.keys().filter((k) => k.includes('.berth-tail-')),
      [],
      'no tail side object is left behind',
    );

    const dst = await tempDir(t, 'berth-s3-dst-');
    // Blob GETs answer 307 to presigned S3 URLs (redirects are on by default); skopeo follows them.
    await skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', ref, `oci:${dst}:v1`], { timeoutMs: 50_000 });
    t.equal(await layoutTagDigest(dst, 'v1'), image.digest, 'the pulled tag names the pushed manifest digest');
    const pulled = await walkBlobs(dst, image.digest, image.mediaType);
    t.same(
      pulled.map((b) => b.digest),
      [...image.blobs].sort(),
      'exactly the pushed blobs come back',
    );
    for (const b of pulled) t.equal(b.actual, b.digest, `${b.mediaType} ${b.digest} hashes to its digest`);
  });

  await t.test('blob GET with redirects enabled: 307 to a presigned URL that serves the bytes', async (t) => {
    const res = await send(`${berth.url}/v2/s3/app/blobs/${bigDigest}`, 'GET');
    t.equal(res.status, 307, 'GET answers 307 Temporary Redirect');
    t.equal(res.headers['docker-content-digest'], bigDigest);
    const location = String(res.headers.location ?? '');
    const url = new URL(location);
    t.equal(url.origin, s3.endpoint, 'the Location points at S3');
    t.equal(url.searchParams.get('X-Amz-Algorithm'), 'AWS4-HMAC-SHA256', 'and is presigned (SigV4 query)');
    t.ok(Number(url.searchParams.get('X-Amz-Expires')) > 0, 'with an expiry');
    const direct = await send(location, 'GET');
    t.equal(direct.status, 200, 'the presigned URL answers 200 without any credentials');
    t.equal(direct.bytes, bigSize);
    t.equal(direct.sha256, bigDigest, 'and serves exactly the blob');

    const head = await send(`${berth.url}/v2/s3/app/blobs/${bigDigest}`, 'HEAD');
    t.equal(head.status, 200, 'HEAD is answered by berth itself');
    t.equal(head.headers['content-length'], String(bigSize));
  });

  // A second berth on the same bucket under another root directory, streaming blobs itself: each upload below
  // writes the big blob into an empty namespace, so it really goes through the S3 writer and the final copy.
  const stream = await startBerth(t, { storage: { s3: s3Section(s3, 'streamed'), redirect: { disable: true } } });
  const single = await startBerth(t, { storage: { s3: s3Section(s3, 'single') } });

  await t.test("the big blob in 3 MiB PATCHes (below S3's 5 MiB minimum part)", async (t) => {
    const post = await send(`${stream.url}/v2/s3/chunked/blobs/uploads/`, 'POST');
    t.equal(post.status, 202);
    let location = String(post.headers.location ?? '');
    const file = await open(bigFile, 'r');
    let sawTail = false;
    let chunks = 0;
    try {
      for (let start = 0; start < bigSize; start += CHUNK) {
        const length = Math.min(CHUNK, bigSize - start);
        const buf = Buffer.allocUnsafe(length);
        const { bytesRead } = await file.read(buf, 0, length, start);
        t.equal(bytesRead, length);
        const res = await send(
          new URL(location, stream.url).href,
          'PATCH',
          {
            'Content-Type': 'application/octet-stream',
            'Content-Range': `${start}-${start + length - 1}`,
            'Content-Length': String(length),
          },
          buf,
        );
        chunks += 1;
        if (res.status !== 202) {
          t.fail(`PATCH ${start}-${start + length - 1} answered ${res.status}: ${res.text}`);
          return;
        }
        if (res.headers.range !== `0-${start + length - 1}`) t.fail(`Range after chunk at ${start}: ${String(res.headers.range)}`);
        location = String(res.headers.location ?? location);
        // A PATCH ending below a part boundary keeps its tail in the bucket until the next request.
        if (s3.keys().some((k) => k.startsWith('streamed/') && k.includes('.berth-tail-'))) sawTail = true;
      }
    } finally {
      await file.close();
    }
    t.ok(chunks > 20, `${chunks} PATCH requests`);
    t.ok(sawTail, 'tails below 5 MiB were kept in S3 between requests');
    const put = await send(`${new URL(location, stream.url).href}${location.includes('?') ? '&' : '?'}digest=${bigDigest}`, 'PUT', {
      'Content-Length': '0',
    });
    t.equal(put.status, 201, `closing PUT: ${put.text}`);
    t.equal(put.headers['docker-content-digest'], bigDigest);
    t.ok(s3.keys().includes(blobKey('streamed', bigDigest)), 'committed at the blob key');
    t.same(s3.uploads(), [], 'no multipart upload is left in progress');
    t.same(
      s3.keys().filter((k) => k.startsWith('streamed/') && (k.includes('.berth-tail-') || k.includes('/_uploads/'))),
      [],
      'no tails or upload data left',
    );

    const get = await send(`${stream.url}/v2/s3/chunked/blobs/${bigDigest}`, 'GET');
    t.equal(get.status, 200, 'with redirects disabled, GET streams the blob itself');
    t.equal(get.headers['content-length'], String(bigSize));
    t.equal(get.bytes, bigSize);
    t.equal(get.sha256, bigDigest, 'the bytes streamed back hash to the digest');

    const ranged = await send(`${stream.url}/v2/s3/chunked/blobs/${bigDigest}`, 'GET', { Range: `bytes=${bigSize - 100}-` });
    t.equal(ranged.status, 206, 'a Range request is passed through to S3');
    t.equal(ranged.headers['content-range'], `bytes ${bigSize - 100}-${bigSize - 1}/${bigSize}`);
    t.equal(ranged.bytes, 100);
  });

  await t.test('the big blob in one PATCH', async (t) => {
    const post = await send(`${single.url}/v2/s3/single/blobs/uploads/`, 'POST');
    t.equal(post.status, 202);
    const location = String(post.headers.location ?? '');
    const patch = await send(
      new URL(location, single.url).href,
      'PATCH',
      {
        'Content-Type': 'application/octet-stream',
        'Content-Length': String(bigSize),
      },
      createReadStream(bigFile, { highWaterMark: MiB }),
    );
    t.equal(patch.status, 202, `PATCH: ${patch.text}`);
    t.equal(patch.headers.range, `0-${bigSize - 1}`);
    const next = String(patch.headers.location ?? location);
    const put = await send(`${new URL(next, single.url).href}${next.includes('?') ? '&' : '?'}digest=${bigDigest}`, 'PUT', { 'Content-Length': '0' });
    t.equal(put.status, 201, `closing PUT: ${put.text}`);
    t.ok(s3.keys().includes(blobKey('single', bigDigest)), 'committed at the blob key');

    const redirect = await send(`${single.url}/v2/s3/single/blobs/${bigDigest}`, 'GET');
    t.equal(redirect.status, 307);
    const got = await send(String(redirect.headers.location), 'GET');
    t.equal(got.status, 200);
    t.equal(got.sha256, bigDigest, 'the presigned URL serves bytes hashing to the digest');
    t.equal(await fileDigest(bigFile), bigDigest);
  });

  await t.test('/readyz follows S3 reachability', async (t) => {
    const proxy = await startFaultProxy(t, s3.endpoint);
    const probe = await startBerth(t, { storage: { s3: s3Section(s3, 'probe', proxy.endpoint) } });
    const up = await send(`${probe.url}/readyz`, 'GET');
    t.equal(up.status, 200, `ready while S3 answers: ${up.text}`);
    proxy.setDown(true);
    const down = await send(`${probe.url}/readyz`, 'GET');
    t.equal(down.status, 503, `not ready while S3 is unreachable: ${down.text}`);
    const alive = await send(`${probe.url}/healthz`, 'GET');
    t.equal(alive.status, 200, 'but alive');
    proxy.setDown(false);
    const back = await send(`${probe.url}/readyz`, 'GET');
    t.equal(back.status, 200, 'ready again once S3 is back');
  });
});
