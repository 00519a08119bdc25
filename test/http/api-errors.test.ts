/**
 * The error paths a registry user sees: for each, the status, the distribution error code in the JSON body
 * (`{"errors":[{"code","message","detail"}]}`), no body on HEAD, and no stack trace or server path in any body.
 * Path-traversal attempts are made with raw request lines (no client-side normalisation) and must never create a
 * file outside the storage root.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import t, { type Test } from 'tap';
import { startBerth, type RunningBerth } from '../helpers/berth.js';

interface Reply {
  status: number;
  headers: Headers;
  body: Buffer;
}

/** Every error body seen, checked at the end for leaks. */
const errorBodies: Array<{ what: string; body: string }> = [];

function digest(data: Buffer | string, algorithm: 'sha256' | 'sha512' = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

async function call(
  base: string,
  method: string,
  path: string,
  init: { headers?: Record<string, string>; body?: Buffer | string } = {},
): Promise<Reply> {
  const res = await fetch(new URL(path, base), {
    method,
    redirect: 'manual',
    headers: init.headers ?? {},
    ...(init.body === undefined ? {} : { body: typeof init.body === 'string' ? init.body : new Uint8Array(init.body) }),
  });
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status >= 400) errorBodies.push({ what: `${method} ${path}`, body: body.toString('utf8') });
  return { status: res.status, headers: res.headers, body };
}

/**
 * One request over a raw socket: the path is sent exactly as given (no URL normalisation of `..` or `%2e`), and
 * everything the server writes is read, so a body sent after a HEAD response would be seen.
 */
async function rawRequest(
  base: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<Reply & { rawBody: Buffer }> {
  const { hostname, port } = new URL(base);
  const socket = connect(Number(port), hostname);
  const lines = [`${method} ${path} HTTP/1.1`, `Host: ${hostname}:${port}`, 'Connection: close'];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  if (body) lines.push(`Content-Length: ${body.length}`);
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', resolve);
    socket.on('error', reject);
  });
  socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  if (body) socket.write(body);
  await done;
  const all = Buffer.concat(chunks);
  const split = all.indexOf('\r\n\r\n');
  const head = all.subarray(0, split).toString('latin1').split('\r\n');
  const status = Number((head[0] ?? '').split(' ')[1]);
  const h = new Headers();
  for (const line of head.slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) h.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  const rawBody = all.subarray(split + 4);
  let decoded = rawBody;
  if (/chunked/i.test(h.get('transfer-encoding') ?? '')) {
    const parts: Buffer[] = [];
    let pos = 0;
    for (;;) {
      const eol = rawBody.indexOf('\r\n', pos);
      if (eol < 0) break;
      const size = parseInt(rawBody.subarray(pos, eol).toString('latin1'), 16);
      if (!(size > 0)) break;
      parts.push(rawBody.subarray(eol + 2, eol + 2 + size));
      pos = eol + 2 + size + 2;
    }
    decoded = Buffer.concat(parts);
  }
  if (status >= 400) errorBodies.push({ what: `${method} ${path}`, body: decoded.toString('utf8') });
  return { status, headers: h, body: decoded, rawBody };
}

function codes(r: Reply): string[] {
  try {
    const parsed = JSON.parse(r.body.toString('utf8')) as { errors?: Array<{ code?: unknown }> };
    return (parsed.errors ?? []).map((e) => String(e.code));
  } catch {
    return [];
  }
}

/** Asserts the status and that the first error code is `code` (body is the spec's error JSON). */
function isError(t: Test, r: Reply, status: number, code: string, what: string): void {
  t.equal(r.status, status, `${what}: status ${status}`, { body: r.body.toString('utf8').slice(0, 300) });
  t.equal(codes(r)[0], code, `${what}: error code ${code}`, { body: r.body.toString('utf8').slice(0, 300) });
  t.match(r.headers.get('content-type') ?? '', /^application\/json/, `${what}: the error body is JSON`);
}

/** Asserts a HEAD error: the status, and not one byte after the headers. */
async function isHeadError(t: Test, base: string, path: string, status: number, what: string): Promise<void> {
  const r = await rawRequest(base, 'HEAD', path);
  t.equal(r.status, status, `${what}: HEAD status ${status}`);
  t.equal(r.rawBody.length, 0, `${what}: HEAD carries no body`);
}

async function pushBlob(base: string, repo: string, data: Buffer, algorithm: 'sha256' | 'sha512' = 'sha256'): Promise<string> {
  const d = digest(data, algorithm);
  const r = await call(base, 'POST', `/v2/${repo}/blobs/uploads/?digest=${d}`, {
    body: data,
    headers: { 'Content-Type': 'application/octet-stream' },
  });
  if (r.status !== 201) throw new Error(`blob push failed: ${r.status} ${r.body.toString()}`);
  return d;
}

async function startSession(base: string, repo: string): Promise<string> {
  const r = await call(base, 'POST', `/v2/${repo}/blobs/uploads/`);
  if (r.status !== 202) throw new Error(`POST upload failed: ${r.status}`);
  return r.headers.get('location') ?? '';
}

function imageManifest(
  config: { digest: string; size: number },
  layers: Array<{ digest: string; size: number }>,
  mediaType = 'application/vnd.oci.image.manifest.v1+json',
): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...l })),
    }),
  );
}

/** Every file and directory under `dir`, as paths relative to it. */
async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      out.push(relative(dir, p));
      if (e.isDirectory()) await visit(p);
    }
  };
  await visit(dir);
  return out;
}

// One berth whose storage root lives inside a directory this test owns, so "nothing outside the root" is checkable.
const outer = await mkdtemp(join(tmpdir(), 'berth-api-errors-'));
t.teardown(() => rm(outer, { recursive: true, force: true }));
const root = join(outer, 'root');
const berth: RunningBerth = await startBerth(t, { storage: { filesystem: { rootdirectory: root } } });
const base = berth.url;
const repo = 'errors/app';

const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
const layer = randomBytes(1000);
const configDigest = await pushBlob(base, repo, config);
const layerDigest = await pushBlob(base, repo, layer);
const goodManifest = imageManifest({ digest: configDigest, size: config.length }, [{ digest: layerDigest, size: layer.length }]);
const goodPut = await call(base, 'PUT', `/v2/${repo}/manifests/v1`, {
  body: goodManifest,
  headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
});
t.equal(goodPut.status, 201, 'setup: a valid manifest is accepted');

t.test('BLOB_UNKNOWN', async (t) => {
  const unknown = digest('never uploaded');
  // Spec: "If the blob is not found in the registry, the response code MUST be 404 Not Found."
  isError(t, await call(base, 'GET', `/v2/${repo}/blobs/${unknown}`), 404, 'BLOB_UNKNOWN', 'GET unknown blob');
  await isHeadError(t, base, `/v2/${repo}/blobs/${unknown}`, 404, 'HEAD unknown blob');
  // a blob that exists, but in another repository, is unknown here
  isError(t, await call(base, 'GET', `/v2/other/repo/blobs/${layerDigest}`), 404, 'BLOB_UNKNOWN', 'GET blob of another repository');
  isError(t, await call(base, 'DELETE', `/v2/${repo}/blobs/${unknown}`), 404, 'BLOB_UNKNOWN', 'DELETE unknown blob');
});

t.test('BLOB_UPLOAD_UNKNOWN', async (t) => {
  const id = randomUUID();
  const path = `/v2/${repo}/blobs/uploads/${id}`;
  isError(t, await call(base, 'GET', path), 404, 'BLOB_UPLOAD_UNKNOWN', 'GET status of an unknown upload');
  isError(t, await call(base, 'PATCH', path, { body: 'x' }), 404, 'BLOB_UPLOAD_UNKNOWN', 'PATCH an unknown upload');
  isError(t, await call(base, 'PUT', `${path}?digest=${digest('x')}`, { body: 'x' }), 404, 'BLOB_UPLOAD_UNKNOWN', 'PUT an unknown upload');
  isError(t, await call(base, 'DELETE', path), 404, 'BLOB_UPLOAD_UNKNOWN', 'DELETE an unknown upload');
  isError(t, await call(base, 'GET', `/v2/${repo}/blobs/uploads/not-a-uuid`), 404, 'BLOB_UPLOAD_UNKNOWN', 'GET an upload id of the wrong shape');
  // a session belongs to the repository that opened it
  const loc = await startSession(base, repo);
  const id2 = loc.slice(loc.lastIndexOf('/') + 1);
  isError(t, await call(base, 'GET', `/v2/other/repo/blobs/uploads/${id2}`), 404, 'BLOB_UPLOAD_UNKNOWN', "GET another repository's session");
  // Spec: "DELETE /v2/<name>/blobs/uploads/<reference>" cancels: afterwards the session is unknown.
  t.equal((await call(base, 'DELETE', loc)).status, 204, 'DELETE cancels an upload with 204');
  isError(t, await call(base, 'GET', loc), 404, 'BLOB_UPLOAD_UNKNOWN', 'GET a cancelled upload');
});

t.test('BLOB_UPLOAD_INVALID: a second writer while a PATCH is streaming', async (t) => {
  const loc = await startSession(base, repo);
  const { hostname, port } = new URL(base);
  const data = randomBytes(64 * 1024);
  // The first PATCH declares the whole length but sends only half, holding its write lease open.
  const socket = connect(Number(port), hostname);
  const first = new Promise<string>((resolve, reject) => {
    let got = '';
    socket.on('data', (c: Buffer) => (got += c.toString('latin1')));
    socket.on('end', () => resolve(got));
    socket.on('error', reject);
  });
  socket.write(
    `PATCH ${loc} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n` +
      `Content-Length: ${data.length}\r\n\r\n`,
  );
  socket.write(data.subarray(0, data.length / 2));
  // A probe whose Content-Range can never fit is 416 while the session is free and 409 while it is leased; it
  // changes nothing either way. Poll until the first PATCH holds the lease (ordering, not timing, is asserted).
  let probe: Reply | undefined;
  for (let i = 0; i < 200; i++) {
    probe = await call(base, 'PATCH', loc, { body: 'z', headers: { 'Content-Range': '100000-100000' } });
    if (probe.status !== 416) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  isError(t, probe as Reply, 409, 'BLOB_UPLOAD_INVALID', 'PATCH while another PATCH writes');
  socket.write(data.subarray(data.length / 2));
  const answer = await first;
  t.match(answer, /^HTTP\/1\.1 202/, 'the first PATCH completes normally');
  const put = await call(base, 'PUT', `${loc}?digest=${digest(data)}`);
  t.equal(put.status, 201, 'and the upload completes with exactly its bytes');
});

t.test('DIGEST_INVALID', async (t) => {
  isError(t, await call(base, 'GET', `/v2/${repo}/blobs/sha256:xyz`), 400, 'DIGEST_INVALID', 'GET blob by a malformed digest');
  isError(t, await call(base, 'GET', `/v2/${repo}/blobs/md5:${'a'.repeat(32)}`), 400, 'DIGEST_INVALID', 'GET blob by an unsupported algorithm');
  await isHeadError(t, base, `/v2/${repo}/blobs/sha256:xyz`, 400, 'HEAD blob by a malformed digest');
  isError(
    t,
    await call(base, 'POST', `/v2/${repo}/blobs/uploads/?digest=sha256:nope`, { body: 'x' }),
    400,
    'DIGEST_INVALID',
    'monolithic POST with a malformed digest',
  );

  // Spec: "If the digest does not match the uploaded content, the registry MUST respond with DIGEST_INVALID" -- and
  // nothing becomes visible.
  const data = randomBytes(4096);
  const claimed = digest('something else');
  const loc = await startSession(base, repo);
  t.equal((await call(base, 'PATCH', loc, { body: data })).status, 202, 'PATCH the data');
  const id = loc.slice(loc.lastIndexOf('/') + 1);
  const uploadDir = join(root, 'docker/registry/v2/repositories', repo, '_uploads', id);
  await t.resolves(stat(uploadDir), 'the upload has data in storage');
  isError(t, await call(base, 'PUT', `${loc}?digest=${claimed}`), 400, 'DIGEST_INVALID', 'PUT with a digest that does not match');
  t.equal((await call(base, 'HEAD', `/v2/${repo}/blobs/${claimed}`)).status, 404, 'the claimed digest is not visible');
  t.equal((await call(base, 'HEAD', `/v2/${repo}/blobs/${digest(data)}`)).status, 404, 'the real digest is not visible either');
  isError(t, await call(base, 'GET', loc), 404, 'BLOB_UPLOAD_UNKNOWN', 'the failed upload was discarded');
  await t.rejects(stat(uploadDir), 'its data is gone from storage');

  // the same through the single-request monolithic upload
  isError(
    t,
    await call(base, 'POST', `/v2/${repo}/blobs/uploads/?digest=${claimed}`, { body: data }),
    400,
    'DIGEST_INVALID',
    'monolithic POST with a wrong digest',
  );
  t.equal((await call(base, 'HEAD', `/v2/${repo}/blobs/${claimed}`)).status, 404, 'nothing is visible after the failed monolithic POST');

  // a sha512 claim for sha256 content is a mismatch too
  const loc2 = await startSession(base, repo);
  isError(
    t,
    await call(base, 'PUT', `${loc2}?digest=${digest('other', 'sha512')}`, { body: data }),
    400,
    'DIGEST_INVALID',
    'PUT with a wrong sha512 digest',
  );
  isError(
    t,
    await call(base, 'PUT', `/v2/${repo}/manifests/${digest('not the manifest')}`, {
      body: goodManifest,
      headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
    }),
    400,
    'DIGEST_INVALID',
    'PUT manifest by a digest that is not its own',
  );
});

t.test('MANIFEST_BLOB_UNKNOWN', async (t) => {
  // Spec: a manifest whose referenced blobs or manifests are unknown is refused with MANIFEST_BLOB_UNKNOWN.
  const missingConfig = imageManifest({ digest: digest('no such config'), size: 14 }, [{ digest: layerDigest, size: layer.length }]);
  isError(
    t,
    await call(base, 'PUT', `/v2/${repo}/manifests/missing-config`, {
      body: missingConfig,
      headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
    }),
    400,
    'MANIFEST_BLOB_UNKNOWN',
    'manifest with an unknown config',
  );
  const missingChild = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: digest('no such manifest'), size: 10 }],
    }),
  );
  isError(
    t,
    await call(base, 'PUT', `/v2/${repo}/manifests/missing-child`, {
      body: missingChild,
      headers: { 'Content-Type': 'application/vnd.oci.image.index.v1+json' },
    }),
    400,
    'MANIFEST_BLOB_UNKNOWN',
    'index with an unknown manifest',
  );
  t.equal((await call(base, 'GET', `/v2/${repo}/manifests/missing-config`)).status, 404, 'the refused manifest was not tagged');
});

t.test('MANIFEST_INVALID and 413', async (t) => {
  const ct = { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' };
  isError(
    t,
    await call(base, 'PUT', `/v2/${repo}/manifests/bad-json`, { body: '{"schemaVersion": 2,', headers: ct }),
    400,
    'MANIFEST_INVALID',
    'body that is not JSON',
  );
  // Spec: "the mediaType field MUST match the Content-Type header" when set.
  isError(
    t,
    await call(base, 'PUT', `/v2/${repo}/manifests/mismatch`, {
      body: goodManifest,
      headers: { 'Content-Type': 'application/vnd.oci.image.index.v1+json' },
    }),
    400,
    'MANIFEST_INVALID',
    'Content-Type index, body mediaType image manifest',
  );
  isError(
    t,
    await call(base, 'PUT', `/v2/${repo}/manifests/no-layers-array`, {
      body: JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'x/y', digest: configDigest, size: config.length },
      }),
      headers: ct,
    }),
    400,
    'MANIFEST_INVALID',
    'image manifest without layers array',
  );
  // Spec: a registry "SHOULD" accept manifests up to 4 MiB and answers 413 for larger ones.
  const big = Buffer.alloc(4 * 1024 * 1024 + 1, 0x20);
  big.write('{"schemaVersion":2,"padding":"');
  const r = await call(base, 'PUT', `/v2/${repo}/manifests/too-big`, { body: big, headers: ct });
  t.equal(r.status, 413, 'a manifest over 4 MiB is 413');
  t.ok(['MANIFEST_INVALID', 'SIZE_INVALID'].includes(codes(r)[0] ?? ''), 'with a spec error code', { codes: codes(r) });
  t.equal((await call(base, 'GET', `/v2/${repo}/manifests/too-big`)).status, 404, 'nothing was stored');
});

t.test('MANIFEST_UNKNOWN', async (t) => {
  isError(t, await call(base, 'GET', `/v2/${repo}/manifests/nope`), 404, 'MANIFEST_UNKNOWN', 'GET unknown tag');
  isError(t, await call(base, 'GET', `/v2/${repo}/manifests/${digest('nope')}`), 404, 'MANIFEST_UNKNOWN', 'GET unknown digest');
  await isHeadError(t, base, `/v2/${repo}/manifests/nope`, 404, 'HEAD unknown tag');
  isError(t, await call(base, 'DELETE', `/v2/${repo}/manifests/${digest('nope')}`), 404, 'MANIFEST_UNKNOWN', 'DELETE unknown digest');
  isError(t, await call(base, 'DELETE', `/v2/${repo}/manifests/nope`), 404, 'MANIFEST_UNKNOWN', 'DELETE unknown tag');
  // the conformance suite's unknown reference: not a valid tag, so it can name nothing -- 404
  isError(t, await call(base, 'GET', `/v2/${repo}/manifests/.INVALID_MANIFEST_NAME`), 404, 'MANIFEST_UNKNOWN', 'GET a reference that is not a tag');
  const r = await call(base, 'GET', `/v2/never/created/manifests/latest`);
  t.equal(r.status, 404, 'GET a manifest of an unknown repository is 404');
  t.ok(['MANIFEST_UNKNOWN', 'NAME_UNKNOWN'].includes(codes(r)[0] ?? ''), 'MANIFEST_UNKNOWN or NAME_UNKNOWN', { codes: codes(r) });
});

t.test('NAME_INVALID', async (t) => {
  // Spec: "<name> MUST match the following regular expression: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
  for (const [what, path] of [
    ['uppercase', '/v2/Errors/App/tags/list'],
    ['..%2f', '/v2/errors/..%2f..%2fescape/tags/list'],
    ['%2e%2e/x', '/v2/%2e%2e/x/tags/list'],
    ['raw ../', '/v2/errors/../../escape/tags/list'],
    ['trailing separator', '/v2/errors-/tags/list'],
    ['300-character name', `/v2/${'a'.repeat(300)}/tags/list`],
  ] as const) {
    isError(t, await rawRequest(base, 'GET', path), 400, 'NAME_INVALID', what);
  }
  await isHeadError(t, base, '/v2/Errors/manifests/latest', 400, 'HEAD with an invalid name');
  isError(
    t,
    await call(base, 'POST', `/v2/${repo}/blobs/uploads/?mount=${layerDigest}&from=..%2F..%2Fescape`),
    400,
    'NAME_INVALID',
    'mount from an invalid name',
  );
  // 255 characters is still a valid name (Distribution's limit)
  const long = `${'a'.repeat(100)}/${'b'.repeat(154)}`;
  t.equal((await call(base, 'GET', `/v2/${long}/tags/list`)).status, 404, 'a 255-character name is valid (and unknown)');
});

t.test('NAME_UNKNOWN', async (t) => {
  // Spec: tags list of a repository that does not exist is 404 NAME_UNKNOWN.
  isError(t, await call(base, 'GET', '/v2/never/created/tags/list'), 404, 'NAME_UNKNOWN', 'tags list of an unknown repository');
});

t.test('TAG_INVALID', async (t) => {
  // Spec: a tag MUST match "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}".
  const ct = { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' };
  for (const [what, tag] of [
    ['leading dash', '-bad'],
    ['leading dot', '.hidden'],
    ['129 characters', 'a'.repeat(129)],
    ['..%2f', '..%2f..%2fescape'],
  ] as const) {
    isError(t, await call(base, 'PUT', `/v2/${repo}/manifests/${tag}`, { body: goodManifest, headers: ct }), 400, 'TAG_INVALID', `PUT tag: ${what}`);
  }
  t.equal(
    (await call(base, 'PUT', `/v2/${repo}/manifests/${'a'.repeat(128)}`, { body: goodManifest, headers: ct })).status,
    201,
    'a 128-character tag is valid',
  );
});

t.test('RANGE_INVALID on chunked uploads', async (t) => {
  const data = randomBytes(100);
  const loc = await startSession(base, repo);
  // Spec: "If a chunk is uploaded out of order, the registry MUST respond with a 416 Requested Range Not
  // Satisfiable code." The Range header says where the upload stands.
  let r = await call(base, 'PATCH', loc, {
    body: data.subarray(50),
    headers: { 'Content-Range': '50-99', 'Content-Type': 'application/octet-stream' },
  });
  isError(t, r, 416, 'RANGE_INVALID', 'a chunk that does not start at 0');
  t.equal(r.headers.get('range'), '0-0', 'Range says nothing was received');
  r = await call(base, 'PATCH', loc, {
    body: data.subarray(0, 50),
    headers: { 'Content-Range': '0-49', 'Content-Type': 'application/octet-stream' },
  });
  t.equal(r.status, 202, 'the first chunk is accepted');
  t.equal(r.headers.get('range'), '0-49', 'Range covers it');
  r = await call(base, 'PATCH', loc, {
    body: data.subarray(0, 50),
    headers: { 'Content-Range': '0-49', 'Content-Type': 'application/octet-stream' },
  });
  isError(t, r, 416, 'RANGE_INVALID', 'the same chunk again');
  t.equal(r.headers.get('range'), '0-49', 'Range still covers the first chunk');
  r = await call(base, 'PATCH', loc, { body: data.subarray(60), headers: { 'Content-Range': '60-99', 'Content-Type': 'application/octet-stream' } });
  isError(t, r, 416, 'RANGE_INVALID', 'a chunk that leaves a gap');
  r = await call(base, 'PATCH', loc, { body: data.subarray(50), headers: { 'Content-Range': '50-99', 'Content-Type': 'application/octet-stream' } });
  t.equal(r.status, 202, 'the right next chunk is accepted');
  r = await call(base, 'PUT', `${loc}?digest=${digest(data)}`);
  t.equal(r.status, 201, 'and the upload completes');
  t.ok((await call(base, 'GET', `/v2/${repo}/blobs/${digest(data)}`)).body.equals(data), 'with the bytes in order');
});

t.test('blob GET with Range', async (t) => {
  const path = `/v2/${repo}/blobs/${layerDigest}`;
  let r = await call(base, 'GET', path, { headers: { Range: 'bytes=10-19' } });
  t.equal(r.status, 206, 'a satisfiable range is 206');
  t.ok(r.body.equals(layer.subarray(10, 20)), 'exactly bytes 10..19');
  t.equal(r.headers.get('content-range'), `bytes 10-19/${layer.length}`, 'Content-Range');
  t.equal(r.headers.get('content-length'), '10', 'Content-Length is the range length');
  r = await call(base, 'GET', path, { headers: { Range: 'bytes=990-' } });
  t.equal(r.status, 206, 'an open range is 206');
  t.ok(r.body.equals(layer.subarray(990)), 'the last 10 bytes');
  t.equal(r.headers.get('content-range'), `bytes 990-999/${layer.length}`, 'Content-Range of an open range');
  r = await call(base, 'GET', path, { headers: { Range: 'bytes=-5' } });
  t.equal(r.status, 206, 'a suffix range is 206');
  t.ok(r.body.equals(layer.subarray(995)), 'the last 5 bytes');
  r = await call(base, 'GET', path, { headers: { Range: 'bytes=1000-1001' } });
  isError(t, r, 416, 'RANGE_INVALID', 'a range past the end');
  t.equal(r.headers.get('content-range'), `bytes */${layer.length}`, 'Content-Range names the size');
  r = await call(base, 'GET', path);
  t.equal(r.status, 200, 'no Range: the whole blob');
  t.ok(r.body.equals(layer), 'byte for byte');
});

t.test('sha512 digests', async (t) => {
  const data = randomBytes(3000);
  const d = await pushBlob(base, repo, data, 'sha512');
  t.match(d, /^sha512:[0-9a-f]{128}$/, 'a sha512 digest');
  let r = await call(base, 'GET', `/v2/${repo}/blobs/${d}`);
  t.equal(r.status, 200, 'GET by sha512');
  t.ok(r.body.equals(data), 'byte for byte');
  t.equal(r.headers.get('docker-content-digest'), d, 'Docker-Content-Digest is the sha512 digest');
  // chunked, completed with a sha512 digest
  const more = randomBytes(2000);
  const loc = await startSession(base, repo);
  t.equal((await call(base, 'PATCH', loc, { body: more.subarray(0, 1000), headers: { 'Content-Range': '0-999' } })).status, 202, 'chunk 1');
  t.equal((await call(base, 'PATCH', loc, { body: more.subarray(1000), headers: { 'Content-Range': '1000-1999' } })).status, 202, 'chunk 2');
  r = await call(base, 'PUT', `${loc}?digest=${digest(more, 'sha512')}`);
  t.equal(r.status, 201, 'chunked upload closed with a sha512 digest');
  t.equal(r.headers.get('location'), `/v2/${repo}/blobs/${digest(more, 'sha512')}`, 'Location names the sha512 blob');
  t.ok((await call(base, 'GET', `/v2/${repo}/blobs/${digest(more, 'sha512')}`)).body.equals(more), 'served byte for byte');
  // a manifest pushed by its sha512 digest
  const md = digest(goodManifest, 'sha512');
  r = await call(base, 'PUT', `/v2/${repo}/manifests/${md}`, {
    body: goodManifest,
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  t.equal(r.status, 201, 'PUT manifest by sha512 digest');
  t.equal(r.headers.get('docker-content-digest'), md, 'Docker-Content-Digest is the sha512 digest');
  r = await call(base, 'GET', `/v2/${repo}/manifests/${md}`);
  t.equal(r.status, 200, 'GET manifest by sha512 digest');
  t.ok(r.body.equals(goodManifest), 'byte for byte');
});

t.test('path traversal never leaves the storage root', async (t) => {
  const payload = Buffer.from('escape attempt');
  const d = digest(payload);
  const attempts: Array<[string, string, Buffer | undefined]> = [
    ['POST', `/v2/..%2f..%2f..%2fescape1/blobs/uploads/?digest=${d}`, payload],
    ['POST', `/v2/%2e%2e/%2e%2e/escape2/blobs/uploads/?digest=${d}`, payload],
    ['POST', `/v2/a/../../../escape3/blobs/uploads/?digest=${d}`, payload],
    ['POST', `/v2/${repo}/blobs/uploads/?digest=sha256:..%2f..%2f..%2fescape4`, payload],
    ['PATCH', `/v2/${repo}/blobs/uploads/..%2f..%2f..%2fescape5`, payload],
    ['PUT', `/v2/${repo}/blobs/uploads/..%2f..%2fescape6?digest=${d}`, payload],
    ['PUT', `/v2/${repo}/manifests/..%2f..%2f..%2fescape7`, goodManifest],
    ['PUT', `/v2/${repo}/manifests/%2e%2e%2f%2e%2e%2fescape8`, goodManifest],
    ['POST', `/v2/${repo}/blobs/uploads/?mount=${layerDigest}&from=..%2f..%2f..%2fescape9`, undefined],
    ['POST', `/v2/${repo}/blobs/uploads/?mount=sha256:..%2f..%2fescape10`, undefined],
    ['GET', `/v2/${repo}/referrers/..%2f..%2fescape11`, undefined],
    ['GET', `/v2/${repo}/blobs/sha256:..%2f..%2f..%2f..%2fetc%2fpasswd`, undefined],
    ['GET', `/v2/..%2f..%2f..%2f..%2f..%2fetc/tags/list`, undefined],
  ];
  for (const [method, path, body] of attempts) {
    const r = await rawRequest(base, method, path, body ? { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } : {}, body);
    t.ok(r.status >= 400 && r.status < 500, `${method} ${path} is refused with a 4xx`, { status: r.status, body: r.body.toString().slice(0, 200) });
  }
  const outside = (await readdir(outer)).filter((e) => e !== 'root');
  t.same(outside, [], 'nothing was created next to the storage root');
  const inside = await walk(root);
  t.ok(
    inside.some((p) => p.includes('_layers')),
    'the walk sees the repositories berth wrote',
  );
  t.same(
    inside.filter((p) => !p.startsWith(`docker${sep}`) && p !== 'docker'),
    [],
    'everything inside the root is under docker/',
  );
  t.same(
    inside.filter((p) => /escape|passwd/.test(p)),
    [],
    'no file or directory is named after an attempt',
  );
});

t.test('UNSUPPORTED when deletes are disabled', async (t) => {
  const ro = await startBerth(t, { storage: { delete: { enabled: false } } });
  const blob = randomBytes(100);
  const bd = await pushBlob(ro.url, 'nodelete/app', blob);
  const cfg = await pushBlob(ro.url, 'nodelete/app', config);
  const m = imageManifest({ digest: cfg, size: config.length }, [{ digest: bd, size: blob.length }]);
  const put = await call(ro.url, 'PUT', '/v2/nodelete/app/manifests/v1', {
    body: m,
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  t.equal(put.status, 201, 'push works');
  // Spec: "If the registry does not support deletion ... it MUST respond with 405 Method Not Allowed" (tag
  // deletion disabled: "400 Bad Request or 405 Method Not Allowed").
  isError(t, await call(ro.url, 'DELETE', `/v2/nodelete/app/blobs/${bd}`), 405, 'UNSUPPORTED', 'DELETE blob');
  isError(t, await call(ro.url, 'DELETE', `/v2/nodelete/app/manifests/${digest(m)}`), 405, 'UNSUPPORTED', 'DELETE manifest by digest');
  isError(t, await call(ro.url, 'DELETE', '/v2/nodelete/app/manifests/v1'), 405, 'UNSUPPORTED', 'DELETE tag');
  t.equal((await call(ro.url, 'GET', `/v2/nodelete/app/blobs/${bd}`)).status, 200, 'the blob is still there');
  t.equal((await call(ro.url, 'GET', '/v2/nodelete/app/manifests/v1')).status, 200, 'the tag is still there');
});

t.test('no stack traces or server paths in any error body', async (t) => {
  t.ok(errorBodies.length > 40, 'many error bodies were collected', { count: errorBodies.length });
  const leaks = errorBodies.filter(
    ({ body }) => /\n\s+at\s|node:internal|\.[cm]?[jt]s:\d+|Error:\s|\/tmp\/|berth-api-errors/.test(body) || body.includes(root),
  );
  t.same(leaks, [], 'no body shows a stack frame, a source file or a storage path');
  const notJson = errorBodies.filter(({ body }) => {
    if (body === '') return false;
    try {
      const parsed = JSON.parse(body) as { errors?: unknown };
      return !Array.isArray(parsed.errors);
    } catch {
      return true;
    }
  });
  t.same(notJson, [], 'every non-empty error body is the spec error JSON');
});
