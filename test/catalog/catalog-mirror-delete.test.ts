import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { MANIFEST_ACCEPT } from '../helpers/containers.js';
import { startHubMirror } from '../helpers/hub-mirror.js';
import { accessLog, accessSince } from '../proxy/helpers.js';

// Issue 12: deleting a repository in a mirrored namespace evicts the cached copy; the next pull fetches it again.
t.test('repository delete in a mirrored namespace evicts the cached copy', async (t) => {
  const { hub, berth } = await startHubMirror(t, 'berth-mirror-delete');
  const pull = () => fetch(`${berth.url}/v2/library/bbox/manifests/1`, { headers: { accept: MANIFEST_ACCEPT } });
  const first = await pull();
  t.equal(first.status, 200, 'pulled through the mirror');
  const digest = first.headers.get('docker-content-digest');
  await first.arrayBuffer();
  const cached = join(berth.root, 'docker/registry/v2/repositories/library/bbox');
  t.ok(existsSync(cached), 'the mirror cached the repository in its storage');

  const del = await fetch(`${berth.url}/api/v1/repositories/library/bbox`, { method: 'DELETE' });
  t.equal(del.status, 202, 'the delete is accepted');
  await del.arrayBuffer();
  t.notOk(existsSync(join(cached, '_manifests')), 'the cached manifests are gone');

  const mark = accessLog(hub.registry).length;
  const again = await pull();
  t.equal(again.status, 200, 'the image is still served: the mirror fetches it again');
  t.equal(again.headers.get('docker-content-digest'), digest, 'with the same digest');
  await again.arrayBuffer();
  t.ok(
    accessSince(hub.registry, mark).some((e) => e.method === 'GET' && e.path.startsWith('/v2/library/bbox/manifests/')),
    'the upstream saw a new manifest fetch after the eviction',
  );
});
