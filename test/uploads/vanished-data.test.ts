/** An upload whose data vanished (purged while its session lived on) is unknown, not a server error. */
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { startBerth } from '../helpers/berth.js';

const sha256 = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

t.test('PATCH and PUT on an upload whose data file vanished answer 404 BLOB_UPLOAD_UNKNOWN', async (t) => {
  const b = await startBerth(t);
  const start = async (): Promise<{ url: URL; id: string }> => {
    const post = await fetch(`${b.url}/v2/app/blobs/uploads/`, { method: 'POST' });
    const url = new URL(post.headers.get('location') as string, b.url);
    const patch = await fetch(url, { method: 'PATCH', body: 'first chunk' });
    t.equal(patch.status, 202);
    return { url, id: post.headers.get('docker-upload-uuid') as string };
  };
  const vanish = (id: string) => rm(join(b.root, 'docker/registry/v2/repositories/app/_uploads', id), { recursive: true });
  const code = async (r: Response) => ((await r.json()) as { errors: Array<{ code: string }> }).errors[0]?.code;

  for (const [what, method, body, digestOf] of [
    ['PATCH', 'PATCH', 'more', undefined],
    ['PUT with a last chunk', 'PUT', 'more', 'first chunkmore'],
    ['PUT without a body', 'PUT', undefined, 'first chunk'],
  ] as const) {
    const { url, id } = await start();
    await vanish(id);
    const target = new URL(url);
    if (digestOf !== undefined) target.searchParams.set('digest', sha256(digestOf));
    const r = await fetch(target, { method, ...(body !== undefined ? { body } : {}) });
    t.equal(r.status, 404, `${what}: 404`);
    t.equal(await code(r), 'BLOB_UPLOAD_UNKNOWN', `${what}: BLOB_UPLOAD_UNKNOWN`);
    t.equal((await fetch(url)).status, 404, `${what}: the session is gone too`);
  }
  t.equal((await fetch(`${b.url}/v2/app/blobs/${sha256('first chunk')}`, { method: 'HEAD' })).status, 404, 'nothing became visible');
});
