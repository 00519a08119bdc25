import t from 'tap';
import { randomBytes } from 'node:crypto';
import { readdir, stat, utimes, writeFile, mkdir } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { purgeUploads } from '../../src/uploads/upload-purger.js';
import { MemorySessionStore } from '../../src/uploads/memory-session-store.js';
import { HashThreads } from '../../src/uploads/hash-threads.js';
import { startBerth } from '../helpers/berth.js';
import { tempDir } from '../helpers/ports.js';
import { sha256 } from '../helpers/digest.js';

async function countFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(p);
    }
  };
  await walk(dir);
  return out;
}

/** The filesystem driver, counting how often upload data is read back. */
class CountingDriver extends FilesystemDriver {
  uploadReads = 0;
  override async reader(path: string, offset?: number, length?: number) {
    if (path.includes('/_uploads/')) this.uploadReads++;
    return super.reader(path, offset, length);
  }
}

t.test('many clients uploading the same blob at once all succeed and leave one blob', async (t) => {
  const b = await startBerth(t);
  const blob = randomBytes(3 * 1024 * 1024);
  const digest = sha256(blob);
  const results = await Promise.all(
    Array.from({ length: 12 }, async (_, i) => {
      const repo = `same/blob${i % 3}`;
      if (i % 2 === 0) {
        return fetch(`${b.url}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: blob }).then((r) => r.status);
      }
      const post = await fetch(`${b.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
      const loc = new URL(post.headers.get('location') as string, b.url);
      const patch = await fetch(loc, { method: 'PATCH', body: blob, headers: { 'content-type': 'application/octet-stream' } });
      const next = new URL(patch.headers.get('location') as string, b.url);
      next.searchParams.set('digest', digest);
      return fetch(next, { method: 'PUT' }).then((r) => r.status);
    }),
  );
  t.same(results, Array(12).fill(201));
  const files = await countFiles(join(b.root, 'docker/registry/v2/blobs'));
  t.equal(files.length, 1, 'one blob file');
  const uploads = (await countFiles(join(b.root, 'docker/registry/v2/repositories'))).filter((f) => f.includes('/_uploads/'));
  t.same(uploads, [], 'no upload data left behind');
  for (const repo of ['same/blob0', 'same/blob1', 'same/blob2']) {
    const got = Buffer.from(await (await fetch(`${b.url}/v2/${repo}/blobs/${digest}`)).arrayBuffer());
    t.equal(sha256(got), digest, `${repo} serves the blob`);
  }
});

t.test('the common path (one PATCH, then PUT) computes the digest without reading the data back', async (t) => {
  const root = await tempDir(t, 'berth-count-');
  const driver = new CountingDriver({ rootDirectory: root });
  const b = await startBerth(t, { storage: { filesystem: { rootdirectory: root } } }, { driver });
  const blob = randomBytes(5 * 1024 * 1024 + 7);
  const post = await fetch(`${b.url}/v2/count/me/blobs/uploads/`, { method: 'POST' });
  const loc = new URL(post.headers.get('location') as string, b.url);
  const patch = await fetch(loc, { method: 'PATCH', body: blob });
  t.equal(patch.status, 202);
  t.equal(patch.headers.get('range'), `0-${blob.length - 1}`);
  loc.searchParams.set('digest', sha256(blob));
  t.equal((await fetch(loc, { method: 'PUT' })).status, 201);
  t.equal(driver.uploadReads, 0, 'upload data was not re-read');
  // A monolithic POST with digest, and a PUT carrying the whole body, don't re-read either.
  const other = randomBytes(100_000);
  t.equal((await fetch(`${b.url}/v2/count/me/blobs/uploads/?digest=${sha256(other)}`, { method: 'POST', body: other })).status, 201);
  t.equal(driver.uploadReads, 0);
});

t.test('a body that does not come from the HTTP parser is hashed from a copy: the caller keeps its buffer', async (t) => {
  // Chunks from Node's HTTP parser are handed to the hashing thread as they are (transferred, not copied); a body
  // from anywhere else (here fastify's inject, which streams the caller's own buffer) must be left as it was.
  const b = await startBerth(t);
  const blob = randomBytes(3 * 1024 * 1024 + 5);
  const before = sha256(blob);
  const res = await b.app.inject({
    method: 'POST',
    url: `/v2/inject/me/blobs/uploads/?digest=${before}`,
    payload: blob,
    headers: { 'content-type': 'application/octet-stream' },
  });
  t.equal(res.statusCode, 201);
  t.equal(blob.length, 3 * 1024 * 1024 + 5, "the caller's buffer still holds its bytes");
  t.equal(sha256(blob), before, 'unchanged');
  // The same bytes over a real socket take the hand-over path, and are stored and digested right.
  const again = Buffer.concat([blob, Buffer.from('x')]);
  const put = await fetch(`${b.url}/v2/socket/me/blobs/uploads/?digest=${sha256(again)}`, { method: 'POST', body: again });
  t.equal(put.status, 201);
  const got = Buffer.from(await (await fetch(`${b.url}/v2/socket/me/blobs/${sha256(again)}`)).arrayBuffer());
  t.equal(sha256(got), sha256(again), 'served as pushed');
});

t.test('when the hashing thread is gone, the upload completes all the same: its bytes are hashed from storage', async (t) => {
  const root = await tempDir(t, 'berth-hash-gone-');
  const driver = new CountingDriver({ rootDirectory: root });
  const hashThreads = new HashThreads({ threads: 1 });
  const b = await startBerth(t, { storage: { filesystem: { rootdirectory: root } } }, { driver, hashThreads });
  const blob = randomBytes(5 * 1024 * 1024 + 7);
  const post = await fetch(`${b.url}/v2/hash/gone/blobs/uploads/`, { method: 'POST' });
  const loc = new URL(post.headers.get('location') as string, b.url);
  t.equal((await fetch(loc, { method: 'PATCH', body: blob })).status, 202);
  await hashThreads.close();
  loc.searchParams.set('digest', sha256(blob));
  const put = await fetch(loc, { method: 'PUT' });
  t.equal(put.status, 201, 'the PUT succeeds');
  t.equal(driver.uploadReads, 1, 'the data was read back once, to hash it');
  t.ok(
    b.logs.some((l) => l.includes('hashing thread failed') && l.includes('"level":40')),
    'a warning says why the upload was read back',
  );
  const got = Buffer.from(await (await fetch(`${b.url}/v2/hash/gone/blobs/${sha256(blob)}`)).arrayBuffer());
  t.equal(sha256(got), sha256(blob), 'the blob is served');
  // A wrong digest is still refused.
  const other = randomBytes(3 * 1024 * 1024);
  const post2 = await fetch(`${b.url}/v2/hash/gone/blobs/uploads/`, { method: 'POST' });
  const loc2 = new URL(post2.headers.get('location') as string, b.url);
  loc2.searchParams.set('digest', sha256(blob));
  const bad = await fetch(loc2, { method: 'PUT', body: other });
  t.equal(bad.status, 400, 'a body that does not match its digest: 400');
  t.match(await bad.json(), { errors: [{ code: 'DIGEST_INVALID' }] });
});

/** The filesystem driver, recording the upload folders it was asked to delete. */
class FolderDeletes extends FilesystemDriver {
  folders: string[] = [];
  override async delete(path: string) {
    if (/\/_uploads\/[^/]+$/.test(path)) this.folders.push(path);
    return super.delete(path);
  }
}

t.test("a completed upload's folder is kept, under a new id, for the next upload of its repository", async (t) => {
  // Removing a folder can wait seconds for the disk (ext4 with `discard`: UploadDataStore.finish); a completion
  // removes the folder's files and renames the folder instead, and the next POST in the repository takes it.
  const root = await tempDir(t, 'berth-spares-');
  const driver = new FolderDeletes({ rootDirectory: root });
  const b = await startBerth(t, { storage: { filesystem: { rootdirectory: root } } }, { driver });
  const uploadsDir = (repo: string) => join(root, 'docker/registry/v2/repositories', repo, '_uploads');
  const idOf = (location: string) => location.slice(location.lastIndexOf('/') + 1).split('?')[0] as string;

  const first = randomBytes(3 * 1024 * 1024);
  const post = await fetch(`${b.url}/v2/keep/me/blobs/uploads/`, { method: 'POST' });
  const loc = new URL(post.headers.get('location') as string, b.url);
  const used = idOf(loc.pathname);
  t.equal((await fetch(loc, { method: 'PATCH', body: first })).status, 202);
  loc.searchParams.set('digest', sha256(first));
  t.equal((await fetch(loc, { method: 'PUT' })).status, 201);
  const kept = await readdir(uploadsDir('keep/me'));
  t.equal(kept.length, 1, 'one folder stays');
  t.not(kept[0], used, 'under another id than the completed upload');
  t.same(await readdir(join(uploadsDir('keep/me'), kept[0] as string)), [], 'and it is empty');
  t.same(driver.folders, [], 'no folder was deleted');
  const gone = await fetch(new URL(`/v2/keep/me/blobs/uploads/${used}`, b.url));
  t.equal(gone.status, 404, 'the completed upload is unknown');
  t.match(await gone.json(), { errors: [{ code: 'BLOB_UPLOAD_UNKNOWN' }] });

  // The next upload of the repository takes the folder; one of another repository does not.
  const other = await fetch(`${b.url}/v2/keep/other/blobs/uploads/`, { method: 'POST' });
  t.not(idOf(other.headers.get('location') as string), kept[0], 'another repository starts a folder of its own');
  const second = randomBytes(2 * 1024 * 1024 + 3);
  const next = await fetch(`${b.url}/v2/keep/me/blobs/uploads/`, { method: 'POST' });
  const nextLoc = new URL(next.headers.get('location') as string, b.url);
  t.equal(idOf(nextLoc.pathname), kept[0], 'the next upload of the repository takes the kept folder');
  t.ok((await stat(join(uploadsDir('keep/me'), kept[0] as string, 'startedat'))).isFile(), 'with its startedat');
  t.equal((await fetch(nextLoc, { method: 'PATCH', body: second })).status, 202);
  nextLoc.searchParams.set('digest', sha256(second));
  t.equal((await fetch(nextLoc, { method: 'PUT' })).status, 201);
  for (const blob of [first, second]) {
    const got = Buffer.from(await (await fetch(`${b.url}/v2/keep/me/blobs/${sha256(blob)}`)).arrayBuffer());
    t.equal(sha256(got), sha256(blob), 'served as pushed');
  }

  // At most 8 folders are kept per repository: the others are removed after their uploads answered.
  const blobs = Array.from({ length: 11 }, () => randomBytes(300_000));
  const statuses = await Promise.all(
    blobs.map((blob) => fetch(`${b.url}/v2/cap/me/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob }).then((r) => r.status)),
  );
  t.same(statuses, Array(11).fill(201));
  await b.app.berth.uploads.settle();
  const capped = await readdir(uploadsDir('cap/me'));
  t.equal(capped.length, 8, 'eight folders kept');
  for (const dir of capped) t.same(await readdir(join(uploadsDir('cap/me'), dir)), [], `${dir} is empty`);
  t.equal(driver.folders.filter((f) => f.includes('/cap/me/')).length, 3, 'the other three were deleted');
  const files = (await countFiles(join(root, 'docker/registry/v2/repositories'))).filter((f) => f.includes('/_uploads/'));
  t.same(
    files.map((f) => f.slice(f.indexOf('/_uploads/'))),
    [`/_uploads/${idOf(other.headers.get('location') as string)}/startedat`],
    'no upload files left but those of the upload still open',
  );
});

t.test('a client that disconnects mid-PATCH can resume from the reported offset', async (t) => {
  const b = await startBerth(t);
  const blob = randomBytes(4 * 1024 * 1024);
  const post = await fetch(`${b.url}/v2/resume/me/blobs/uploads/`, { method: 'POST' });
  const path = post.headers.get('location') as string;
  const port = new URL(b.url).port;
  // Send 1.5 MiB of a declared 4 MiB body, then drop the connection.
  await new Promise<void>((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'PATCH', headers: { 'content-length': blob.length } });
    req.on('error', () => resolve());
    req.write(blob.subarray(0, 1536 * 1024), () =>
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 300),
    );
  });
  let offset = 0;
  for (let i = 0; i < 50; i++) {
    const status = await fetch(`${b.url}${path}`);
    t.equal(status.status, 204);
    offset = Number((status.headers.get('range') as string).split('-')[1]) + 1;
    if (offset > 1) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  t.ok(offset > 0 && offset <= 1536 * 1024, `kept the bytes received (${offset})`);
  const rest = blob.subarray(offset);
  const patch = await fetch(`${b.url}${path}`, {
    method: 'PATCH',
    body: rest,
    headers: { 'content-range': `${offset}-${blob.length - 1}` },
  });
  t.equal(patch.status, 202);
  const put = new URL(path, b.url);
  put.searchParams.set('digest', sha256(blob));
  t.equal((await fetch(put, { method: 'PUT' })).status, 201);
  const got = Buffer.from(await (await fetch(`${b.url}/v2/resume/me/blobs/${sha256(blob)}`)).arrayBuffer());
  t.ok(got.equals(blob), 'resumed blob is byte-identical');
});

t.test('a chunk whose body does not match its Content-Range changes nothing', async (t) => {
  const b = await startBerth(t);
  const blob = randomBytes(300_000);
  const post = await fetch(`${b.url}/v2/size/check/blobs/uploads/`, { method: 'POST' });
  const loc = new URL(post.headers.get('location') as string, b.url);
  const first = await fetch(loc, { method: 'PATCH', body: blob.subarray(0, 100_000), headers: { 'content-range': '0-99999' } });
  t.equal(first.status, 202);
  const bad = await fetch(loc, { method: 'PATCH', body: blob.subarray(100_000, 150_000), headers: { 'content-range': '100000-299999' } });
  t.equal(bad.status, 416, 'Content-Range and Content-Length disagree');
  const status = await fetch(loc);
  t.equal(status.headers.get('range'), '0-99999', 'offset unchanged');
  const rest = await fetch(loc, { method: 'PATCH', body: blob.subarray(100_000), headers: { 'content-range': '100000-299999' } });
  t.equal(rest.status, 202);
  loc.searchParams.set('digest', sha256(blob));
  t.equal((await fetch(loc, { method: 'PUT' })).status, 201);
});

t.test('stale uploads are purged by age, fresh ones stay', async (t) => {
  const root = await tempDir(t, 'berth-purge-');
  const driver = new FilesystemDriver({ rootDirectory: root });
  const sessions = new MemorySessionStore({ ttlMs: 60_000 });
  t.teardown(() => sessions.close());
  const base = join(root, 'docker/registry/v2/repositories');
  const make = async (repo: string, id: string, startedAt: Date) => {
    const dir = join(base, repo, '_uploads', id);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'data'), 'x');
    await writeFile(join(dir, 'startedat'), startedAt.toISOString());
    // The last activity of an upload is its start or its last write, whichever is later.
    for (const p of [join(dir, 'data'), join(dir, 'startedat'), dir]) await utimes(p, startedAt, startedAt);
    await mkdir(join(base, repo, '_layers'), { recursive: true });
  };
  const old = new Date(Date.now() - 10 * 24 * 3600_000);
  await make('a', '11111111-1111-4111-8111-111111111111', old);
  await make('deep/b', '22222222-2222-4222-8222-222222222222', old);
  await make('a', '33333333-3333-4333-8333-333333333333', new Date());
  // No startedat: judged by the directory's age.
  const bare = join(base, 'a', '_uploads', '44444444-4444-4444-8444-444444444444');
  await mkdir(bare, { recursive: true });
  await utimes(bare, old, old);

  t.equal(await purgeUploads(driver, sessions, { ageMs: 168 * 3600_000, dryRun: true }), 3, 'dry run counts');
  t.equal((await readdir(join(base, 'a', '_uploads'))).length, 3, 'dry run deletes nothing');
  t.equal(await purgeUploads(driver, sessions, { ageMs: 168 * 3600_000, dryRun: false }), 3);
  t.same(await readdir(join(base, 'a', '_uploads')), ['33333333-3333-4333-8333-333333333333']);
  t.same(await readdir(join(base, 'deep/b', '_uploads')), []);
  t.ok((await stat(join(base, 'a', '_uploads', '33333333-3333-4333-8333-333333333333', 'data'))).isFile());
});
