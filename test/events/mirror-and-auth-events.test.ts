import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { startEventReceiver } from '../helpers/event-receiver.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

t.test('pulls served by the pull-through cache give pull events, the first (fetched upstream) and the cached ones', async (t) => {
  const upstream = await startBerth(t);
  const image = await new RegistryClient(upstream.url).pushImage('library/tool', '1', [randomLayer(2000)]);
  const rx = await startEventReceiver(t);
  const mirror = await startBerth(t, {
    proxy: { remoteurl: upstream.url },
    notifications: { events: { includereferences: true }, endpoints: [{ name: 'rx', url: rx.url, backoff: '100ms' }] },
  });
  for (let i = 0; i < 2; i++) {
    const m = await fetch(`${mirror.url}/v2/library/tool/manifests/1`, { headers: { accept: OCI_MANIFEST } });
    t.equal(m.status, 200);
    await m.arrayBuffer();
    const b = await fetch(`${mirror.url}/v2/library/tool/blobs/${image.layers[0]?.digest ?? ''}`);
    const body = Buffer.from(await b.arrayBuffer());
    t.equal(b.status, 200, `blob GET ${i}: ${b.status === 200 ? '' : body.toString('utf8').slice(0, 300)}`);
  }
  const events = await rx.waitFor((e) => e.length >= 4);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(rx.events().length, 4, 'one event per pull, none for the upstream fetch itself');
  const base = mirror.url.replace(/^http:\/\//, 'http://');
  for (const e of [events[0], events[2]]) {
    t.same(e?.target, {
      mediaType: OCI_MANIFEST,
      size: image.manifest.size,
      digest: image.manifest.digest,
      length: image.manifest.size,
      repository: 'library/tool',
      url: `${base}/v2/library/tool/manifests/${image.manifest.digest}`,
      tag: '1',
      references: [image.config, ...image.layers].map((d) => ({ mediaType: d.mediaType, size: d.size, digest: d.digest })),
    });
    t.equal(e?.action, 'pull');
  }
  for (const e of [events[1], events[3]]) {
    t.match(e, { action: 'pull', target: { mediaType: 'application/octet-stream', digest: image.layers[0]?.digest, repository: 'library/tool' } });
  }
});

t.test('with auth: actor.name is the user; tag deletes; audit and access log carry the user', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-events-auth-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const users = await writeUsers(dir);
  const rx = await startEventReceiver(t);
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
  const berth = await startBerth(
    t,
    {
      log: { level: 'info', accesslog: { disabled: false } },
      auth: { htpasswd: { realm: 'test', path: users } },
      notifications: { endpoints: [{ name: 'rx', url: rx.url, backoff: '100ms' }] },
    },
    { logger },
  );
  const basic = `Basic ${Buffer.from('alice:alice-pw').toString('base64')}`;
  const authed: typeof fetch = (input, init = {}) =>
    fetch(input, { ...init, headers: { ...(init.headers as Record<string, string>), authorization: basic } });
  const bad = await fetch(`${berth.url}/v2/`, { headers: { authorization: `Basic ${Buffer.from('alice:wrong').toString('base64')}` } });
  t.equal(bad.status, 401);
  const layer = randomLayer(100);
  const { createHash } = await import('node:crypto');
  const digest = `sha256:${createHash('sha256').update(layer).digest('hex')}`;
  const put = await authed(`${berth.url}/v2/team/app/blobs/uploads/?digest=${digest}`, {
    method: 'POST',
    body: layer,
    headers: { 'content-type': 'application/octet-stream' },
  });
  t.equal(put.status, 201);
  const config = Buffer.from('{}');
  const cd = `sha256:${createHash('sha256').update(config).digest('hex')}`;
  t.equal((await authed(`${berth.url}/v2/team/app/blobs/uploads/?digest=${cd}`, { method: 'POST', body: config })).status, 201);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: 2 },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest, size: 100 }],
  });
  t.equal(
    (await authed(`${berth.url}/v2/team/app/manifests/v1`, { method: 'PUT', body: manifest, headers: { 'content-type': OCI_MANIFEST } })).status,
    201,
  );
  t.equal((await authed(`${berth.url}/v2/team/app/manifests/v1`, { method: 'DELETE' })).status, 202);
  const events = await rx.waitFor((e) => e.length >= 4);
  t.same(
    events.map((e) => e.actor),
    [{ name: 'alice' }, { name: 'alice' }, { name: 'alice' }, { name: 'alice' }],
  );
  t.same(events[3]?.target, { repository: 'team/app', tag: 'v1' }, 'a tag delete (registry:2 3.x shape; 2.8 cannot delete tags)');
  const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  const audit = parsed.filter((l) => l.logger === 'audit');
  t.same(
    audit.map((l) => l.action),
    ['login failure', 'manifest push', 'tag delete'],
  );
  t.match(audit[1], { user: 'alice', addr: /^127\.0\.0\.1:\d+$/, reqId: /.+/, repository: 'team/app', tag: 'v1' });
  t.match(audit[0], { user: 'alice', addr: '127.0.0.1' });
  const access = parsed.filter((l) => l.msg === 'request' && l.method === 'PUT');
  t.ok(access.length > 0 && access.every((l) => l.user === 'alice'), 'the access log names the user');
});
