import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import t, { type Test } from 'tap';
import type { RawSection } from '../../src/config/fields.js';
import { startBerth, type RunningBerth } from '../helpers/berth.js';
import { s3Op, startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { s3StorageSection, startS3Server, type S3Server } from '../helpers/s3-server.js';
import { sha256 } from '../helpers/digest.js';

/**
 * Issue 3: "S3 errors (5xx, SlowDown, reset connections) are retried with back-off where safe; when S3 stays down,
 * clients get 503 with the error JSON, the process stays up, and no partial or corrupt blob is ever committed."
 * Fault tests: "S3 answering 500/503 or dropping connections mid-upload and mid-download → the right status to the
 * client and nothing committed." A fault-injecting proxy sits between berth (in-process) and the strict S3 server.
 */

for (const k of Object.keys(process.env)) if (k.startsWith('AWS_') && k !== 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED') delete process.env[k];

const MiB = 1024 * 1024;
const REPO = 'faults/app';
/** "Persistently": more failures than any retry budget uses. */
const ALWAYS = 1_000_000;

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  sha256: string;
  bytes: number;
  text: string;
  /** The connection broke before the body was complete. */
  aborted: boolean;
}

/** One request; the answer body is hashed as it streams in, and a broken body is reported, not thrown. */
function send(url: string, method: string, headers: Record<string, string> = {}, body?: Buffer): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    // A connection of its own per request: berth may answer an upload before reading all of its body, and the rest
    // of that body must not end up in front of the next request.
    const req = httpRequest(url, { method, agent: false, headers: body ? { 'Content-Length': String(body.length), ...headers } : headers }, (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      let text = '';
      let settled = false;
      const finish = (aborted: boolean) => {
        if (settled) return;
        settled = true;
        resolve({ status: res.statusCode ?? 0, headers: res.headers, sha256: `sha256:${hash.digest('hex')}`, bytes, text, aborted });
      };
      res.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
        if (text.length < 65536) text += chunk.toString('utf8');
      });
      res.on('end', () => finish(false));
      res.on('error', () => finish(true));
      res.on('close', () => finish(!res.complete));
    });
    req.on('error', reject);
    req.end(body);
  });
}

interface Rig {
  s3: S3Server;
  proxy: FaultProxy;
  berth: RunningBerth;
}

/** berth → fault proxy → strict S3 server; quick give-ups (2 attempts), blobs streamed through berth. */
async function rig(t: Test): Promise<Rig> {
  const s3 = await startS3Server(t);
  const proxy = await startFaultProxy(t, s3.endpoint);
  const section: RawSection = { ...s3StorageSection(s3, proxy.endpoint), maxattempts: 2 };
  const berth = await startBerth(t, { storage: { s3: section, redirect: { disable: true } } });
  return { s3, proxy, berth };
}

/** The blob's data key in the bucket, if committed (registry:2 layout: blobs/sha256/<2 hex>/<hex>/data). */
function committedBlobs(s3: S3Server, digest: string): string[] {
  const hex = digest.slice('sha256:'.length);
  return s3.keys().filter((k) => k === `docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`);
}

/** The client-visible shape of "S3 is down": 503 with the distribution error JSON, code UNAVAILABLE. */
function assertUnavailable(t: Test, res: Answer, what: string): void {
  t.equal(res.status, 503, `${what}: 503 Service Unavailable`);
  let code: string | undefined;
  try {
    code = (JSON.parse(res.text) as { errors: Array<{ code: string }> }).errors[0]?.code;
  } catch {
    code = undefined;
  }
  // Distribution's error body: {"errors":[{"code":…,"message":…,"detail":…}]}.
  t.equal(code, 'UNAVAILABLE', `${what}: error JSON with code UNAVAILABLE (${res.text.slice(0, 200)})`);
}

async function assertAliveAndClean(t: Test, r: Rig, digest: string): Promise<void> {
  t.equal((await send(`${r.berth.url}/healthz`, 'GET')).status, 200, 'the process is still up');
  t.equal((await send(`${r.berth.url}/v2/`, 'GET')).status, 200, 'and still serves the API');
  t.equal((await send(`${r.berth.url}/v2/${REPO}/blobs/${digest}`, 'HEAD')).status, 404, 'HEAD on the blob: 404, nothing committed');
  t.same(committedBlobs(r.s3, digest), [], 'no blobs/…/data key for it in the bucket');
}

async function startUpload(t: Test, r: Rig): Promise<string> {
  const post = await send(`${r.berth.url}/v2/${REPO}/blobs/uploads/`, 'POST');
  t.equal(post.status, 202, 'upload started');
  return String(post.headers.location ?? '');
}

function withDigest(r: Rig, location: string, digest: string): string {
  return `${new URL(location, r.berth.url).href}${location.includes('?') ? '&' : '?'}digest=${digest}`;
}

/** GET the blob through berth and check every byte. */
async function assertServed(t: Test, r: Rig, blob: Buffer, digest: string): Promise<void> {
  const got = await send(`${r.berth.url}/v2/${REPO}/blobs/${digest}`, 'GET');
  t.equal(got.status, 200);
  t.equal(got.bytes, blob.length);
  t.equal(got.sha256, digest, 'the blob streams back intact');
}

t.test('S3 answering 503 persistently during a PATCH, then recovering', async (t) => {
  const r = await rig(t);
  const blob = randomBytes(12 * MiB + 99);
  const digest = sha256(blob);
  const location = await startUpload(t, r);

  r.proxy.failNext(ALWAYS, 503);
  const patch = await send(new URL(location, r.berth.url).href, 'PATCH', { 'Content-Type': 'application/octet-stream' }, blob);
  assertUnavailable(t, patch, 'PATCH');
  t.ok(
    r.proxy.requests.some((q) => q.fault === '503'),
    'S3 requests were answered 503 by the proxy',
  );
  r.proxy.clear();
  await assertAliveAndClean(t, r, digest);

  const status = await send(new URL(location, r.berth.url).href, 'GET');
  t.equal(status.status, 204, 'the upload still exists');
  t.equal(status.headers.range, '0-0', 'and holds none of the failed PATCH');
  const retry = await send(
    new URL(location, r.berth.url).href,
    'PATCH',
    { 'Content-Type': 'application/octet-stream', 'Content-Range': `0-${blob.length - 1}` },
    blob,
  );
  t.equal(retry.status, 202, `the same PATCH succeeds once S3 is back: ${retry.text}`);
  const put = await send(withDigest(r, String(retry.headers.location ?? location), digest), 'PUT');
  t.equal(put.status, 201, `PUT: ${put.text}`);
  await assertServed(t, r, blob, digest);
});

t.test('S3 answering 503 persistently during the closing PUT, then recovering', async (t) => {
  const r = await rig(t);

  await t.test('every S3 request fails', async (t) => {
    const blob = randomBytes(11 * MiB + 5);
    const digest = sha256(blob);
    const location = await startUpload(t, r);
    const patch = await send(new URL(location, r.berth.url).href, 'PATCH', { 'Content-Type': 'application/octet-stream' }, blob);
    t.equal(patch.status, 202);
    r.proxy.failNext(ALWAYS, 503);
    const put = await send(withDigest(r, String(patch.headers.location ?? location), digest), 'PUT');
    assertUnavailable(t, put, 'PUT');
    r.proxy.clear();
    await assertAliveAndClean(t, r, digest);
    const again = await send(withDigest(r, String(patch.headers.location ?? location), digest), 'PUT');
    t.equal(again.status, 201, `the same PUT succeeds once S3 is back: ${again.text}`);
    await assertServed(t, r, blob, digest);
  });

  await t.test('only CompleteMultipartUpload fails (500), with the last chunk in the PUT', async (t) => {
    const blob = randomBytes(13 * MiB + 77);
    const digest = sha256(blob);
    const location = await startUpload(t, r);
    const cut = 11 * MiB;
    const patch = await send(
      new URL(location, r.berth.url).href,
      'PATCH',
      { 'Content-Type': 'application/octet-stream', 'Content-Range': `0-${cut - 1}` },
      blob.subarray(0, cut),
    );
    t.equal(patch.status, 202);
    const next = String(patch.headers.location ?? location);
    r.proxy.failNext(ALWAYS, 500, s3Op.completeMultipart);
    const put = await send(
      withDigest(r, next, digest),
      'PUT',
      { 'Content-Type': 'application/octet-stream', 'Content-Range': `${cut}-${blob.length - 1}` },
      blob.subarray(cut),
    );
    assertUnavailable(t, put, 'PUT');
    t.ok(
      r.proxy.requests.some((q) => q.fault === '500' && q.method === 'POST'),
      'CompleteMultipartUpload was refused',
    );
    r.proxy.clear();
    await assertAliveAndClean(t, r, digest);
    const status = await send(new URL(next, r.berth.url).href, 'GET');
    t.equal(status.status, 204);
    t.equal(status.headers.range, `0-${blob.length - 1}`, 'the upload kept the last chunk');
    const again = await send(withDigest(r, next, digest), 'PUT');
    t.equal(again.status, 201, `PUT without body completes once S3 is back: ${again.text}`);
    await assertServed(t, r, blob, digest);
    t.same(r.s3.uploads(), [], 'no multipart upload left in progress');
  });
});

t.test('connections to S3 dropped mid-upload', async (t) => {
  const r = await rig(t);
  const blob = randomBytes(12 * MiB + 1);
  const digest = sha256(blob);
  const location = await startUpload(t, r);

  // Every UploadPart loses its connection 1 MiB into the part; the SDK's retries meet the same fate.
  r.proxy.dropMidRequest(ALWAYS, MiB, s3Op.uploadPart);
  const patch = await send(new URL(location, r.berth.url).href, 'PATCH', { 'Content-Type': 'application/octet-stream' }, blob);
  assertUnavailable(t, patch, 'PATCH');
  t.ok(r.proxy.requests.filter((q) => q.fault === 'drop-request').length >= 2, 'the part upload was retried before giving up');
  r.proxy.clear();
  await assertAliveAndClean(t, r, digest);

  // A single drop is absorbed by the retry (the part body is a Buffer, resent byte for byte).
  r.proxy.dropMidRequest(1, MiB, s3Op.uploadPart);
  const retry = await send(
    new URL(location, r.berth.url).href,
    'PATCH',
    { 'Content-Type': 'application/octet-stream', 'Content-Range': `0-${blob.length - 1}` },
    blob,
  );
  t.equal(retry.status, 202, `the same PATCH succeeds, one dropped part retried: ${retry.text}`);
  const put = await send(withDigest(r, String(retry.headers.location ?? location), digest), 'PUT');
  t.equal(put.status, 201, `PUT: ${put.text}`);
  await assertServed(t, r, blob, digest);
});

t.test('connections to S3 dropped mid-download', async (t) => {
  const r = await rig(t);
  const blob = randomBytes(9 * MiB + 3);
  const digest = sha256(blob);
  const location = await startUpload(t, r);
  const put = await send(withDigest(r, location, digest), 'PUT', { 'Content-Type': 'application/octet-stream' }, blob);
  t.equal(put.status, 201);
  const url = `${r.berth.url}/v2/${REPO}/blobs/${digest}`;

  await t.test('one drop: the download resumes where it broke, the client sees nothing', async (t) => {
    r.proxy.dropMidResponse(1, 2 * MiB, s3Op.getObject);
    const got = await send(url, 'GET');
    t.equal(got.status, 200);
    t.notOk(got.aborted);
    t.equal(got.bytes, blob.length);
    t.equal(got.sha256, digest, 'every byte arrives, once');
    t.ok(
      r.proxy.requests.some((q) => q.fault === 'drop-response'),
      'the proxy did cut a GetObject',
    );
  });

  await t.test('S3 keeps dropping: the body is cut short, never padded or corrupt', async (t) => {
    r.proxy.dropMidResponse(ALWAYS, MiB, s3Op.getObject);
    const got = await send(url, 'GET');
    r.proxy.clear();
    t.equal(got.status, 200, 'headers were already sent');
    t.equal(got.headers['content-length'], String(blob.length));
    t.ok(got.aborted, 'the connection is aborted, so the client knows the body is incomplete');
    t.ok(got.bytes < blob.length, `only ${got.bytes} of ${blob.length} bytes arrived`);
    t.equal((await send(`${r.berth.url}/healthz`, 'GET')).status, 200, 'the process is still up');
  });

  await t.test('S3 unreachable before the first byte: 503', async (t) => {
    r.proxy.dropNext(ALWAYS, s3Op.getObject);
    const got = await send(url, 'GET');
    r.proxy.clear();
    assertUnavailable(t, got, 'GET');
  });

  await t.test('after S3 recovers the blob downloads intact', async (t) => {
    const got = await send(url, 'GET');
    t.equal(got.status, 200);
    t.equal(got.sha256, digest);
  });
});

t.test('the client drops mid-PATCH: what arrived is kept (tail in S3) and the upload resumes', async (t) => {
  const r = await rig(t);
  const blob = randomBytes(8 * MiB + 11);
  const digest = sha256(blob);
  const location = await startUpload(t, r);
  const sent = 3 * MiB + 5;
  // Announce the whole blob, send part of it, then cut the connection.
  await new Promise<void>((resolve) => {
    const req = httpRequest(new URL(location, r.berth.url), {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(blob.length) },
    });
    req.on('error', () => resolve());
    req.write(blob.subarray(0, sent), () => {
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 300);
    });
  });
  // The server notices the abort, stores what arrived and releases the upload: its offset then moves past 0.
  let offset = 0;
  for (let i = 0; i < 100 && offset === 0; i++) {
    await new Promise((res) => setTimeout(res, 50));
    const status = await send(new URL(location, r.berth.url).href, 'GET');
    if (status.status !== 204) break;
    const range = String(status.headers.range ?? '0-0');
    offset = range === '0-0' ? 0 : Number(range.split('-')[1]) + 1;
  }
  t.ok(offset > 0 && offset <= sent, `the upload kept ${offset} of the ${sent} bytes that arrived`);
  t.same(committedBlobs(r.s3, digest), [], 'nothing committed');
  const rest = await send(
    withDigest(r, location, digest),
    'PUT',
    { 'Content-Type': 'application/octet-stream', 'Content-Range': `${offset}-${blob.length - 1}` },
    blob.subarray(offset),
  );
  t.equal(rest.status, 201, `the rest in the closing PUT completes the upload: ${rest.text}`);
  await assertServed(t, r, blob, digest);
  t.same(
    r.s3.keys().filter((k) => k.includes('.berth-tail-') || k.includes('/_uploads/')),
    [],
    'no tail or upload data left',
  );
});
