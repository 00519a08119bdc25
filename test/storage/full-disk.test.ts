/**
 * A full disk and a read-only mount, on a real 2 MB tmpfs under a real `berth serve`: a clear 507 answer naming the
 * cause, `/readyz` saying storage is not writable, nothing partial visible, and uploads resuming once space is back.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { spawnBerth, type BerthProcess } from '../helpers/berth-process.js';

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Mounts a 2 MB tmpfs; undefined (with the reason) when this machine does not let us. */
function mountTmpfs(): { dir: string } | { reason: string } {
  const dir = mkdtempSync(join(tmpdir(), 'berth-full-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir], { stdio: 'pipe' });
    return { dir };
  } catch (err) {
    rmdirSync(dir);
    return { reason: `cannot mount a tmpfs here: ${String((err as Error).message).split('\n')[0]}` };
  }
}

async function error(r: Response): Promise<{ code?: string; message?: string }> {
  return ((await r.json()) as { errors: Array<{ code: string; message: string }> }).errors[0] ?? {};
}

/** Waits (at most 15 s: the write probe is cached for a few seconds) until `/readyz` answers `status`. */
async function readiness(b: BerthProcess, status: number): Promise<{ status: number; storage?: string }> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const r = await fetch(`${b.url}/readyz`);
    const body = (await r.json()) as { checks?: { storage?: string } };
    const result = { status: r.status, ...(body.checks?.storage !== undefined ? { storage: body.checks.storage } : {}) };
    if (r.status === status || Date.now() > deadline) return result;
    await new Promise((res) => setTimeout(res, 100));
  }
}

// One tmpfs per case, so the two cases run at the same time: most of their time is waiting for the cached write probe
// of /readyz to expire.
const fullMount = mountTmpfs();
const roMount = mountTmpfs();
for (const m of [fullMount, roMount]) {
  if ('dir' in m) {
    t.teardown(() => {
      execFileSync('umount', ['-l', m.dir]);
      rmdirSync(m.dir);
    });
  }
}
if ('reason' in fullMount || 'reason' in roMount) {
  t.plan(0, 'reason' in fullMount ? fullMount.reason : 'reason' in roMount ? roMount.reason : '');
} else {
  t.jobs = 2;

  t.test('disk full: 507 naming the cause, readiness says so, the upload resumes once space is freed', async (t) => {
    const root = fullMount.dir;
    const b = await spawnBerth(t, { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: root });
    const first = randomBytes(1024);
    const rest = randomBytes(64 * 1024);
    const post = await fetch(`${b.url}/v2/app/blobs/uploads/`, { method: 'POST' });
    const upload = new URL(post.headers.get('location') as string, b.url);
    t.equal((await fetch(upload, { method: 'PATCH', body: first })).status, 202);

    // Fill the disk to the last byte.
    const filler = join(root, 'filler');
    t.throws(() => writeFileSync(filler, Buffer.alloc(4 * 1024 * 1024)), { code: 'ENOSPC' });

    const patch = await fetch(upload, { method: 'PATCH', body: rest, headers: { 'Content-Range': `1024-${1024 + rest.length - 1}` } });
    t.equal(patch.status, 507, 'PATCH on a full disk: 507 Insufficient Storage');
    const pe = await error(patch);
    t.equal(pe.code, 'UNAVAILABLE');
    t.match(pe.message, /insufficient storage: no space left/);
    const status = await fetch(upload);
    t.equal(status.headers.get('range'), '0-1023', 'the offset is kept');

    const mono = await fetch(`${b.url}/v2/app/blobs/uploads/?digest=${sha256(rest)}`, { method: 'POST', body: rest });
    t.equal(mono.status, 507, 'a monolithic upload too');
    t.equal((await fetch(`${b.url}/v2/app/blobs/${sha256(rest)}`, { method: 'HEAD' })).status, 404, 'nothing partial is visible');

    const full = await readiness(b, 503);
    t.equal(full.status, 503, '/readyz: not ready');
    t.match(full.storage, /not writable: no space left/);

    rmSync(filler);
    t.equal((await readiness(b, 200)).status, 200, 'ready again once space is freed');
    const resumed = await fetch(upload, { method: 'PATCH', body: rest, headers: { 'Content-Range': `1024-${1024 + rest.length - 1}` } });
    t.equal(resumed.status, 202, 'the upload resumes where it was');
    const whole = Buffer.concat([first, rest]);
    const done = new URL(resumed.headers.get('location') as string, b.url);
    done.searchParams.set('digest', sha256(whole));
    t.equal((await fetch(done, { method: 'PUT' })).status, 201);
    const got = Buffer.from(await (await fetch(`${b.url}/v2/app/blobs/${sha256(whole)}`)).arrayBuffer());
    t.ok(got.equals(whole), 'the blob is exactly what was sent');
  });

  t.test('read-only storage: 507 naming the cause, reads still work, readiness says so', async (t) => {
    const root = roMount.dir;
    const b = await spawnBerth(t, { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: root });
    const blob = randomBytes(2048);
    t.equal((await fetch(`${b.url}/v2/ro/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob })).status, 201);
    execFileSync('mount', ['-o', 'remount,ro', root]);
    t.teardown(() => execFileSync('mount', ['-o', 'remount,rw', root]));

    const post = await fetch(`${b.url}/v2/other/blobs/uploads/`, { method: 'POST' });
    t.equal(post.status, 507);
    t.match((await error(post)).message, /insufficient storage: the storage is read-only/);
    const again = await fetch(`${b.url}/v2/ro/blobs/uploads/?digest=${sha256(randomBytes(10))}`, { method: 'POST', body: 'x' });
    t.equal(again.status, 507, 'an upload into an existing repository too');
    t.equal((await fetch(`${b.url}/v2/ro/blobs/${sha256(blob)}`)).status, 200, 'reads still work');
    const ro = await readiness(b, 503);
    t.equal(ro.status, 503);
    t.match(ro.storage, /not writable: read-only/);
    execFileSync('mount', ['-o', 'remount,rw', root]);
    t.equal((await readiness(b, 200)).status, 200, 'ready again once writable');
  });
}
