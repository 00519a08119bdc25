/**
 * Request-path findings of a review, each shown from the outside over HTTP: the status, the distribution error JSON
 * and the headers a client sees.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import t from 'tap';
import type { FileInfo, FileWriter, SignalOption, StorageDriver, WalkOptions, WriterState } from '../../src/storage/driver.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { paths } from '../../src/storage/paths.js';
import { startBerth } from '../helpers/berth.js';
import { spawnBerth } from '../helpers/berth-process.js';
import { sha256 } from '../helpers/digest.js';

interface Reply {
  status: number;
  headers: Headers;
  body: string;
}

async function call(
  base: string,
  method: string,
  path: string,
  init: { headers?: Record<string, string>; body?: Buffer | string } = {},
): Promise<Reply> {
  const res = await fetch(new URL(path, base), {
    method,
    headers: init.headers ?? {},
    ...(init.body === undefined ? {} : { body: typeof init.body === 'string' ? init.body : new Uint8Array(init.body) }),
  });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()).toString('utf8') };
}

function firstCode(r: Reply): string | undefined {
  try {
    return (JSON.parse(r.body) as { errors?: Array<{ code?: string }> }).errors?.[0]?.code;
  } catch {
    return undefined;
  }
}

async function pushBlob(base: string, repo: string, data: Buffer): Promise<string> {
  const d = sha256(data);
  const r = await call(base, 'POST', `/v2/${repo}/blobs/uploads/?digest=${d}`, { body: data });
  if (r.status !== 201) throw new Error(`blob push failed: ${r.status} ${r.body}`);
  return d;
}

const berth = await startBerth(t);
const base = berth.url;

t.test('a path with malformed percent-encoding is answered with the distribution error JSON', async (t) => {
  // Fastify refuses such a URL before routing; its own body is `{"error":"Bad Request","code":"FST_ERR_BAD_URL"}`.
  for (const path of ['/v2/app/blobs/uploads/%ZZ', '/v2/app/manifests/%E0%A4%A', '/v2/%zz/tags/list']) {
    const r = await call(base, 'GET', path);
    t.equal(r.status, 400, `${path}: 400`);
    t.equal(firstCode(r), 'NAME_INVALID', `${path}: a distribution error code`, { body: r.body });
    t.match(r.headers.get('content-type') ?? '', /^application\/json/, `${path}: JSON`);
    t.equal(r.headers.get('docker-distribution-api-version'), 'registry/2.0', `${path}: the API version header`);
    t.notMatch(r.body, /FST_ERR/, `${path}: no fastify internals`);
  }
});

t.test('tags/list of the parent directory of a nested repository is NAME_UNKNOWN', async (t) => {
  const cfg = Buffer.from('{"architecture":"amd64","os":"linux"}');
  const cd = await pushBlob(base, 'library/app', cfg);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: cfg.length },
    layers: [],
  });
  const put = await call(base, 'PUT', '/v2/library/app/manifests/v1', {
    body: manifest,
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  t.equal(put.status, 201, 'library/app is pushed');
  t.same(JSON.parse((await call(base, 'GET', '/v2/library/app/tags/list')).body), { name: 'library/app', tags: ['v1'] }, 'its tags');
  const catalog = JSON.parse((await call(base, 'GET', '/v2/_catalog')).body) as { repositories: string[] };
  t.notOk(catalog.repositories.includes('library'), 'the catalog does not list `library`');
  // Spec: "If the repository is not known to the registry, the response MUST be 404 with NAME_UNKNOWN" -- and
  // `library` is not a repository, only the directory `library/app` lives in.
  const r = await call(base, 'GET', '/v2/library/tags/list');
  t.equal(r.status, 404, 'tags/list of `library` is 404');
  t.equal(firstCode(r), 'NAME_UNKNOWN', 'NAME_UNKNOWN', { body: r.body });
  // a repository with blobs but no manifest yet exists (its tags are an empty list), as before
  await pushBlob(base, 'blobs/only', randomBytes(10));
  const onlyBlobs = await call(base, 'GET', '/v2/blobs/only/tags/list');
  t.equal(onlyBlobs.status, 200, 'a repository with only blobs is known');
  t.same(JSON.parse(onlyBlobs.body), { name: 'blobs/only', tags: [] }, 'with no tags');
});

t.test('a chunked PATCH body longer than its Content-Range is SIZE_INVALID, not a connection reset', async (t) => {
  const start = await call(base, 'POST', '/v2/size/app/blobs/uploads/');
  const location = start.headers.get('location') ?? '';
  t.equal(start.status, 202, 'upload started');
  const { hostname, port } = new URL(base);
  const socket = connect(Number(port), hostname);
  let answer = '';
  const ended = new Promise<string | undefined>((resolve) => {
    socket.on('data', (c: Buffer) => (answer += c.toString('latin1')));
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code));
    socket.on('close', () => resolve(undefined));
  });
  socket.write(
    `PATCH ${location} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nConnection: close\r\nContent-Range: 0-99\r\nTransfer-Encoding: chunked\r\n\r\n`,
  );
  // Many chunks well past the declared 100 bytes, so the server sees the excess before the body ends.
  const chunk = randomBytes(64 * 1024);
  for (let i = 0; i < 32; i++) {
    if (socket.destroyed) break;
    socket.write(`${chunk.length.toString(16)}\r\n`);
    socket.write(chunk);
    socket.write('\r\n');
    await new Promise((r) => setImmediate(r));
  }
  if (!socket.destroyed) socket.write('0\r\n\r\n');
  const socketError = await ended;
  t.equal(socketError, undefined, 'the connection is not reset');
  t.match(answer, /^HTTP\/1\.1 400 /, 'the answer is 400', { answer: answer.slice(0, 300) });
  t.match(answer, /"code":"SIZE_INVALID"/, 'SIZE_INVALID');
  const status = await call(base, 'GET', location);
  t.equal(status.status, 204, 'the session is still there');
  t.equal(status.headers.get('range'), '0-0', 'and nothing of the refused chunk was kept');
  // the upload still completes with the right bytes
  const data = randomBytes(100);
  t.equal((await call(base, 'PATCH', location, { body: data, headers: { 'Content-Range': '0-99' } })).status, 202, 'the right chunk is accepted');
  t.equal((await call(base, 'PUT', `${location}?digest=${sha256(data)}`)).status, 201, 'the upload completes');
});

/**
 * The real filesystem driver, except that the next blob read first deletes the blob: what a client sees when
 * garbage collection (or a delete) removes a blob between the size lookup and the open of a GET.
 */
class VanishingBlobDriver implements StorageDriver {
  readonly name = 'filesystem';
  /** Set to make the next read of a blob's data find it deleted. */
  vanishNext = false;

  private readonly inner: StorageDriver;

  constructor(inner: FilesystemDriver) {
    this.inner = inner;
  }

  getContent(path: string): Promise<Buffer> {
    return this.inner.getContent(path);
  }
  putContent(path: string, content: Buffer): Promise<void> {
    return this.inner.putContent(path, content);
  }
  async reader(path: string, offset?: number, length?: number, options?: SignalOption): Promise<Readable> {
    if (this.vanishNext && path.startsWith(`${paths.blobsRoot}/`)) {
      this.vanishNext = false;
      await this.inner.delete(path.slice(0, path.lastIndexOf('/')));
    }
    return this.inner.reader(path, offset, length, options);
  }
  writer(path: string, state?: WriterState): Promise<FileWriter> {
    return this.inner.writer(path, state);
  }
  stat(path: string): Promise<FileInfo> {
    return this.inner.stat(path);
  }
  list(path: string, options?: SignalOption): Promise<string[]> {
    return this.inner.list(path, options);
  }
  walk(path: string, options?: WalkOptions): AsyncGenerator<FileInfo> {
    return this.inner.walk(path, options);
  }
  move(source: string, dest: string, options?: SignalOption): Promise<void> {
    return this.inner.move(source, dest, options);
  }
  delete(path: string): Promise<void> {
    return this.inner.delete(path);
  }
  redirectURL(path: string, options: { method: 'GET' | 'HEAD'; expiresInSeconds: number }): Promise<string | null> {
    return this.inner.redirectURL(path, options);
  }
  health(): Promise<void> {
    return this.inner.health();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

t.test('a blob deleted between its size lookup and its read is 404 BLOB_UNKNOWN, not a 500', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-review-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const driver = new VanishingBlobDriver(new FilesystemDriver({ rootDirectory: dir }));
  const b = await startBerth(t, { storage: { filesystem: { rootdirectory: dir } } }, { driver });
  const data = randomBytes(1000);
  const d = await pushBlob(b.url, 'gone/app', data);
  t.equal((await call(b.url, 'GET', `/v2/gone/app/blobs/${d}`)).status, 200, 'the blob is served');
  driver.vanishNext = true;
  const r = await call(b.url, 'GET', `/v2/gone/app/blobs/${d}`);
  t.equal(r.status, 404, '404 once it is gone');
  t.equal(firstCode(r), 'BLOB_UNKNOWN', 'BLOB_UNKNOWN', { body: r.body });
  t.equal(r.headers.get('cache-control'), null, 'the error is not cacheable for a year like the blob was');
  t.equal(r.headers.get('docker-content-digest'), null, 'and does not claim to be the blob');
  const ranged = await call(b.url, 'GET', `/v2/gone/app/blobs/${d}`, { headers: { Range: 'bytes=0-9' } });
  t.equal(ranged.status, 404, 'the next GET (the size lookup sees it gone) is 404 too');
});

t.test('a PATCH whose upload is cancelled while it streams answers BLOB_UPLOAD_UNKNOWN', async (t) => {
  const start = await call(base, 'POST', '/v2/cancel/app/blobs/uploads/');
  const location = start.headers.get('location') ?? '';
  const { hostname, port } = new URL(base);
  const socket = connect(Number(port), hostname);
  const answer = new Promise<string>((resolve, reject) => {
    let got = '';
    socket.on('data', (c: Buffer) => (got += c.toString('latin1')));
    socket.on('end', () => resolve(got));
    socket.on('error', reject);
  });
  const data = randomBytes(64 * 1024);
  socket.write(`PATCH ${location} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nConnection: close\r\nContent-Length: ${data.length}\r\n\r\n`);
  socket.write(data.subarray(0, data.length / 2));
  // A probe whose Content-Range never fits is 416 while the session is free and 409 while the PATCH holds it.
  let probe = 0;
  for (let i = 0; i < 200 && probe !== 409; i++) {
    probe = (await call(base, 'PATCH', location, { body: 'z', headers: { 'Content-Range': '100000-100000' } })).status;
    if (probe !== 409) await new Promise((r) => setTimeout(r, 10));
  }
  t.equal(probe, 409, 'the first PATCH is writing');
  t.equal((await call(base, 'DELETE', location)).status, 204, 'the upload is cancelled meanwhile');
  socket.write(data.subarray(data.length / 2));
  const raw = await answer;
  // BLOB_UPLOAD_UNKNOWN: "If a blob upload has been cancelled or was never started, this error code MAY be
  // returned." A 409 "another request is writing to this upload" would name a writer that does not exist.
  t.match(raw, /^HTTP\/1\.1 404 /, 'the streaming PATCH is 404', { raw: raw.slice(0, 300) });
  t.match(raw, /"code":"BLOB_UPLOAD_UNKNOWN"/, 'BLOB_UPLOAD_UNKNOWN');
  t.equal((await call(base, 'GET', location)).status, 404, 'and the upload stays unknown');
});

// prlimit (util-linux) lowers the file descriptor limit of a running berth process.
const prlimit = spawnSync('prlimit', ['--version']).status === 0;

t.test('tags/list and manifest PUT with more tags or layers than file descriptors', { skip: prlimit ? false : 'needs prlimit' }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-review-fds-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const proc = await spawnBerth(t, { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir, REGISTRY_LOG_LEVEL: 'error' });
  const limit = 256;
  execFileSync('prlimit', ['--pid', String(proc.proc.pid), `--nofile=${limit}:${limit}`]);
  const count = limit * 8;
  const d = sha256('any manifest');
  const tagsDir = join(dir, 'docker/registry/v2/repositories/many/tags/_manifests/tags');
  // Written directly in registry:2's layout.
  for (let i = 0; i < count; i++) {
    const tagDir = join(tagsDir, `t${i}`, 'current');
    mkdirSync(tagDir, { recursive: true });
    writeFileSync(join(tagDir, 'link'), d);
  }
  // Reading every tag link at once needs one descriptor per tag: EMFILE, answered 500.
  const r = await call(proc.url, 'GET', '/v2/many/tags/tags/list');
  t.equal(r.status, 200, `tags/list of ${count} tags with ${limit} file descriptors is 200`, { body: r.body.slice(0, 300) });
  const tags = r.status === 200 ? (JSON.parse(r.body) as { tags: string[] }).tags : [];
  t.equal(tags.length, count, 'every tag is listed');
  const page = await call(proc.url, 'GET', '/v2/many/tags/tags/list?n=2&last=t0');
  t.same(JSON.parse(page.body), { name: 'many/tags', tags: ['t1', 't10'] }, 'and pages in lexical order');

  // A manifest listing one layer many times: checking each descriptor with its own open link file at once is
  // EMFILE too (and starves every other request of descriptors meanwhile).
  const cfg = Buffer.from('{"architecture":"amd64","os":"linux"}');
  const layer = randomBytes(100);
  const cd = await pushBlob(proc.url, 'many/layers', cfg);
  const ld = await pushBlob(proc.url, 'many/layers', layer);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: cfg.length },
    layers: Array.from({ length: count }, () => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: ld, size: layer.length })),
  });
  const put = await call(proc.url, 'PUT', '/v2/many/layers/manifests/v1', {
    body: manifest,
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  t.equal(put.status, 201, `a manifest with ${count} layer descriptors is accepted`, { body: put.body.slice(0, 300) });
  const got = await call(proc.url, 'GET', '/v2/many/layers/manifests/v1');
  t.equal(got.body, manifest, 'and served byte for byte');
  // the missing ones are still all reported, each once
  const missingA = sha256('missing a');
  const missingB = sha256('missing b');
  const bad = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: cfg.length },
    layers: [missingB, ld, missingA, missingB].map((d) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: d, size: 1 })),
  });
  const refused = await call(proc.url, 'PUT', '/v2/many/layers/manifests/bad', {
    body: bad,
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  t.equal(firstCode(refused), 'MANIFEST_BLOB_UNKNOWN', 'missing layers are MANIFEST_BLOB_UNKNOWN');
  t.same(
    (JSON.parse(refused.body) as { errors: Array<{ detail: unknown }> }).errors[0]?.detail,
    { digests: [missingA, missingB].sort() },
    'each named once',
  );
});
