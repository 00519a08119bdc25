import t from 'tap';
import { utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startBerth, type RunningBerth } from '../helpers/berth.js';

const HOURS = 3_600_000;

/** Starts an upload with one chunk written and returns its id (the session is then paused). */
async function pausedUpload(b: RunningBerth, repo: string): Promise<string> {
  const res = await fetch(`${b.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  const id = res.headers.get('docker-upload-uuid') as string;
  const patch = await fetch(`${b.url}/v2/${repo}/blobs/uploads/${id}`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/octet-stream', 'content-range': '0-2' },
    body: Buffer.from('abc'),
  });
  if (patch.status !== 202) throw new Error(`PATCH answered ${patch.status}`);
  return id;
}

/** Makes the upload look as if its last request was `ageMs` ago (start time and file times). */
async function age(b: RunningBerth, repo: string, id: string, ageMs: number): Promise<void> {
  const dir = join(b.root, 'docker/registry/v2/repositories', repo, '_uploads', id);
  const then = new Date(Date.now() - ageMs);
  await writeFile(join(dir, 'startedat'), then.toISOString());
  for (const p of [join(dir, 'data'), join(dir, 'startedat'), dir]) await utimes(p, then, then);
}

const sessionStatus = async (b: RunningBerth, repo: string, id: string) => (await fetch(`${b.url}/v2/${repo}/blobs/uploads/${id}`)).status;

// The two cases (each its own berth and storage root) run at the same time: both mostly wait for runs on a 1 s interval.
t.jobs = 2;

for (const runner of ['scheduled gc', 'the upload purger'] as const) {
  t.test(`${runner}: a paused upload younger than berth.uploadsessionttl survives; an expired one loses session and data together`, async (t) => {
    const raw =
      runner === 'scheduled gc'
        ? { berth: { uploadsessionttl: '48h', gc: { interval: '1s', grace: '0s' } } }
        : { berth: { uploadsessionttl: '48h' }, storage: { maintenance: { uploadpurging: { enabled: true, age: '1h', interval: '1s' } } } };
    const b = await startBerth(t, raw);
    const young = await pausedUpload(b, 'stale/young');
    const old = await pausedUpload(b, 'stale/old');
    // Older than the 24 h that scheduled gc used to apply whatever the TTL, younger than the 48 h TTL.
    await age(b, 'stale/young', young, 30 * HOURS);
    await age(b, 'stale/old', old, 50 * HOURS);
    const oldDir = join(b.root, 'docker/registry/v2/repositories/stale/old/_uploads', old);
    const youngDir = join(b.root, 'docker/registry/v2/repositories/stale/young/_uploads', young);
    const exists = async (p: string) =>
      (await import('node:fs/promises')).stat(p).then(
        () => true,
        () => false,
      );
    for (let i = 0; i < 150 && (await exists(oldDir)); i++) await new Promise((r) => setTimeout(r, 200));
    t.notOk(await exists(oldDir), "the expired upload's data is removed");
    t.equal(await sessionStatus(b, 'stale/old', old), 404, 'and its session with it');
    // Let at least two more runs pass: the young upload must still be there after them.
    await new Promise((r) => setTimeout(r, 2500));
    t.ok(await exists(youngDir), 'the paused upload younger than the TTL keeps its data');
    t.equal(await sessionStatus(b, 'stale/young', young), 204, 'and its session');
    const done = await fetch(
      `${b.url}/v2/stale/young/blobs/uploads/${young}?digest=sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad`,
      {
        method: 'PUT',
      },
    );
    t.equal(done.status, 201, 'and the client can still finish it');
  });
}
