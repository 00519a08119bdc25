import t from 'tap';
import { TEAM_USERS, writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { startEventReceiver } from '../helpers/event-receiver.js';
import { tempDir } from '../helpers/ports.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';
import { Visitor } from '../helpers/ui-visitor.js';

/*
 * Deletes through the JSON API and the web UI are seen as the /v2/ DELETE of the same thing is: one `delete` event of
 * registry:2's shape per deletion, with the request that did it (its user as actor), an audit line, and the catalog
 * index updated. alice deletes with a token (/v2/ and the API), bob through the UI with his login session.
 */

type Event = Record<string, unknown> & { action: string; target: Record<string, unknown>; request: Record<string, string>; actor: { name?: string } };

const RULES = [
  { who: 'alice', repository: '**', actions: ['*'] },
  { who: 'alice', registry: 'catalog', actions: ['*'] },
  { who: 'bob', repository: 'team/**', actions: ['pull', 'delete'] },
];

/** An event with what differs between two deletions of the same kind (ids, time, address, names) as placeholders. */
function shape(e: Event): string {
  const { id, addr, ...request } = e.request;
  const target: Record<string, unknown> = { ...e.target, repository: '<repo>' };
  if (target.tag !== undefined) target.tag = '<tag>';
  if (target.digest !== undefined) target.digest = '<digest>';
  return JSON.stringify({ ...e, id: '<id>', timestamp: '<time>', target, request: { ...request, id: id ? '<id>' : '', addr: addr ? '<addr>' : '' } });
}

t.test('JSON API and web UI deletes give the events and audit lines of /v2/ deletes, with their user', async (t) => {
  const dir = await tempDir(t, 'berth-delete-events-');
  const users = await writeUsers(dir);
  const rx = await startEventReceiver(t);
  const berth = await startBerth(t, {
    log: { level: 'info' },
    auth: { builtin: { users, rules: RULES } },
    notifications: { endpoints: [{ name: 'rx', url: rx.url, backoff: '100ms' }] },
  });

  const tokenRes = await fetch(
    `${berth.url}/auth/token?service=berth&scope=${encodeURIComponent('repository:team/app:pull,push,delete repository:ref/app:pull,push,delete registry:catalog:*')}`,
    { headers: { authorization: `Basic ${Buffer.from(`alice:${TEAM_USERS.alice}`).toString('base64')}` } },
  );
  t.equal(tokenRes.status, 200);
  const alice = ((await tokenRes.json()) as { token: string }).token;
  const asAlice = (path: string, method = 'GET') =>
    fetch(`${berth.url}${path}`, { method, headers: { authorization: `Bearer ${alice}`, 'user-agent': 'delete-test/1' } });

  const origFetch = globalThis.fetch;
  globalThis.fetch = (input, init = {}) =>
    origFetch(input, { ...init, headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${alice}` } });
  const client = new RegistryClient(berth.url);
  const pushed: Awaited<ReturnType<RegistryClient['pushImage']>>[] = [];
  try {
    pushed.push(await client.pushImage('ref/app', 'v1', [randomLayer(500)]));
    pushed.push(await client.pushImage('ref/app', null, [randomLayer(500)]));
    await client.pushImage('team/app', 'v1', [randomLayer(500)]);
    pushed.push(await client.pushImage('team/app', 'v2', [randomLayer(500)]));
    pushed.push(await client.pushImage('team/app', null, [randomLayer(500)]));
  } finally {
    globalThis.fetch = origFetch;
  }
  const [refV1, untaggedRef, b, c] = pushed as [(typeof pushed)[0], (typeof pushed)[0], (typeof pushed)[0], (typeof pushed)[0]];
  const deletes = () => (rx.events() as Event[]).filter((e) => e.action === 'delete');
  /**
   * The events after `n` that satisfy `wanted`, once there is one. Only those: a push event delivered late (the
   * queue delivers in order, but the pushes above may still be on their way) must not be taken for the delete.
   */
  const next = async (n: number, wanted: (e: Event) => boolean): Promise<Event[]> =>
    ((await rx.waitFor((es) => (es.slice(n) as Event[]).some(wanted))).slice(n) as Event[]).filter(wanted);
  const tagCount = async () => {
    const res = await asAlice('/api/v1/repositories/team/app');
    const body = (await res.json()) as { tagCount?: number };
    return res.status === 200 ? body.tagCount : res.status;
  };
  t.equal(await tagCount(), 2);

  // The /v2/ deletes everything is compared with: a tag, then an untagged manifest.
  let n = rx.events().length;
  t.equal((await asAlice('/v2/ref/app/manifests/v1', 'DELETE')).status, 202);
  const [v2Tag] = await next(n, (e) => e.action === 'delete');
  n = rx.events().length;
  t.equal((await asAlice(`/v2/ref/app/manifests/${untaggedRef.manifest.digest}`, 'DELETE')).status, 202);
  const [v2Manifest] = await next(n, (e) => e.action === 'delete');
  t.same(v2Tag?.target, { repository: 'ref/app', tag: 'v1' }, 'the /v2/ tag delete as registry:2 shapes it');
  t.match(v2Manifest?.target, { repository: 'ref/app', digest: untaggedRef.manifest.digest });

  t.test('JSON API tag delete', async (t) => {
    const n = rx.events().length;
    const res = await asAlice('/api/v1/repositories/team/app/tags/v1', 'DELETE');
    t.equal(res.status, 202);
    t.same(await res.json(), { deleted: 'v1' });
    const got = await next(n, (e) => e.action === 'delete');
    t.same(got[0]?.target, { repository: 'team/app', tag: 'v1' });
    t.equal(got[0]?.actor.name, 'alice', 'the actor is the token subject');
    t.equal(got[0]?.request.useragent, 'delete-test/1');
    t.equal(got[0]?.request.id, res.headers.get('x-request-id'), 'the request that deleted it');
    t.equal(shape(got[0] as Event), shape(v2Tag as Event), 'the same event as the /v2/ tag delete');
    t.equal(await tagCount(), 1, 'the catalog index counts one tag less');
  });

  t.test('JSON API manifest delete', async (t) => {
    const n = rx.events().length;
    const res = await asAlice(`/api/v1/repositories/team/app/manifests/${c.manifest.digest}`, 'DELETE');
    t.equal(res.status, 202);
    await res.arrayBuffer();
    const got = await next(n, (e) => e.action === 'delete');
    t.match(got[0]?.target, { repository: 'team/app', digest: c.manifest.digest });
    t.equal(got[0]?.target.tag, undefined);
    t.equal(got[0]?.actor.name, 'alice');
    t.equal(shape(got[0] as Event), shape(v2Manifest as Event), 'the same event as the /v2/ manifest delete');
    const gone = await asAlice(`/v2/team/app/manifests/${c.manifest.digest}`, 'HEAD');
    t.equal(gone.status, 404, 'the manifest is gone');
  });

  t.test('web UI deletes: tag, manifest, repository', async (t) => {
    const bob = new Visitor(berth.url);
    const form = await bob.get('/ui/login');
    t.equal((await bob.post('/ui/login', { username: 'bob', password: TEAM_USERS.bob as string, csrf: Visitor.csrf(form) })).status, 303);
    const del = async (query: string, fields: Record<string, string>) => {
      const confirm = await bob.get(`/ui/r/team/app/-/delete?${query}`);
      t.equal(confirm.status, 200, 'the confirmation page');
      return bob.post('/ui/r/team/app/-/delete', { ...fields, csrf: Visitor.csrf(confirm) });
    };

    let n = rx.events().length;
    const tag = await del('tag=v2', { tag: 'v2' });
    t.equal(tag.status, 303);
    t.match(tag.headers.get('location'), /^\/ui\/r\/team\/app\?deleted=/);
    let got = await next(n, (e) => e.action === 'delete');
    t.same(got[0]?.target, { repository: 'team/app', tag: 'v2' });
    t.equal(got[0]?.actor.name, 'bob', 'the actor is the logged-in UI user');
    t.equal(got[0]?.request.method, 'POST', 'the request is the form POST');
    t.equal(got[0]?.request.id, tag.headers.get('x-request-id'), 'the request that deleted it');
    t.equal(shape({ ...(got[0] as Event), actor: {}, request: {} }), shape({ ...(v2Tag as Event), actor: {}, request: {} }), 'same shape as /v2/');
    t.equal(await tagCount(), 0, 'the catalog index counts no tags');

    n = rx.events().length;
    const manifest = await del(`digest=${encodeURIComponent(b.manifest.digest)}`, { digest: b.manifest.digest });
    t.equal(manifest.status, 303);
    got = await next(n, (e) => e.action === 'delete');
    t.match(got[0]?.target, { repository: 'team/app', digest: b.manifest.digest });
    t.equal(got[0]?.target.tag, undefined);
    t.equal(got[0]?.actor.name, 'bob');
    t.equal(
      shape({ ...(got[0] as Event), actor: {}, request: {} }),
      shape({ ...(v2Manifest as Event), actor: {}, request: {} }),
      'same shape as /v2/',
    );

    n = rx.events().length;
    const repo = await del('repository=team%2Fapp', { repository: 'team/app' });
    t.equal(repo.status, 303);
    const job = repo.headers.get('location') ?? '';
    got = await next(n, (e) => e.action === 'delete');
    t.same(got[0]?.target, { repository: 'team/app' }, 'the repository delete names only the repository');
    t.equal(got[0]?.actor.name, 'bob');
    let state = '';
    for (let i = 0; i < 100 && state !== 'done'; i++) {
      state = /data-state="([a-z]+)"/.exec((await bob.get(job)).body)?.[1] ?? '';
      if (state !== 'done') await new Promise((r) => setTimeout(r, 50));
    }
    t.equal(state, 'done');
    t.equal(await tagCount(), 404, 'the catalog index forgot the repository');
    const catalog = (await (await asAlice('/v2/_catalog')).json()) as { repositories: string[] };
    t.notOk(catalog.repositories.includes('team/app'), 'not in _catalog');
  });

  t.test('one event and one audit line per deletion', async (t) => {
    // A pull after everything: its event arrives behind any event the deletes queued.
    const n = rx.events().length;
    const pull = await asAlice(`/v2/ref/app/manifests/${refV1.manifest.digest}`);
    t.equal(pull.status, 200);
    await pull.arrayBuffer();
    await next(n, (e) => e.action === 'pull');
    t.same(
      deletes().map((e) => [e.target.repository, e.target.tag ?? e.target.digest ?? '', e.actor.name]),
      [
        ['ref/app', 'v1', 'alice'],
        ['ref/app', untaggedRef.manifest.digest, 'alice'],
        ['team/app', 'v1', 'alice'],
        ['team/app', c.manifest.digest, 'alice'],
        ['team/app', 'v2', 'bob'],
        ['team/app', b.manifest.digest, 'bob'],
        ['team/app', '', 'bob'],
      ],
      'exactly the deletes done, each once, in order',
    );
    t.same(
      rx
        .events()
        .filter((e) => e.action !== 'push')
        .map((e) => e.action),
      [...deletes().map(() => 'delete'), 'pull'],
      'no other events than the pushes, the deletes and the final pull',
    );
    const audit = berth.logs
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.logger === 'audit' && String(l.action).endsWith('delete'));
    t.same(
      audit.map((l) => [l.action, l.user, l.tag ?? l.digest ?? l.repository]),
      [
        ['tag delete', 'alice', 'v1'],
        ['manifest delete', 'alice', untaggedRef.manifest.digest],
        ['tag delete', 'alice', 'v1'],
        ['manifest delete', 'alice', c.manifest.digest],
        ['tag delete', 'bob', 'v2'],
        ['manifest delete', 'bob', b.manifest.digest],
        ['repository delete', 'bob', 'team/app'],
      ],
      'one audit line per deletion, naming the user',
    );
  });
});

t.test('in a mirrored namespace the API deletes the cached copy, with its event; /v2/ deletes stay refused', async (t) => {
  const upstream = await startBerth(t);
  const image = await new RegistryClient(upstream.url).pushImage('team/app', '1', [randomLayer(500)]);
  const rx = await startEventReceiver(t);
  const mirror = await startBerth(t, {
    proxy: { upstreams: [{ name: 'upstream.example', url: upstream.url, tagttl: '1h', timeout: '5s' }] },
    notifications: { endpoints: [{ name: 'rx', url: rx.url, backoff: '100ms' }] },
  });
  const client = new RegistryClient(mirror.url);
  t.strictSame(await client.pull('team/app', '1'), [], 'pulled through the mirror');
  // The tag is cached in the background.
  let tags: { name: string }[] = [];
  for (let i = 0; i < 100 && tags.length === 0; i++) {
    const res = await fetch(`${mirror.url}/api/v1/repositories/team/app/tags`);
    tags = res.status === 200 ? ((await res.json()) as { tags: { name: string }[] }).tags : (await res.arrayBuffer(), []);
    if (tags.length === 0) await new Promise((r) => setTimeout(r, 50));
  }
  t.same(
    tags.map((x) => x.name),
    ['1'],
    'the cached tag is listed',
  );

  const v2 = await fetch(`${mirror.url}/v2/team/app/manifests/${image.manifest.digest}`, { method: 'DELETE' });
  t.equal(v2.status, 405, 'a /v2/ delete in a mirrored namespace is refused');
  await v2.arrayBuffer();

  const del = await fetch(`${mirror.url}/api/v1/repositories/team/app/tags/1`, { method: 'DELETE' });
  t.equal(del.status, 202, 'the API evicts the cached tag');
  await del.arrayBuffer();
  const got = (await rx.waitFor((es) => es.some((e) => e.action === 'delete'))).filter((e) => e.action === 'delete');
  t.same(got[0]?.target, { repository: 'team/app', tag: '1' });
  const delManifest = await fetch(`${mirror.url}/api/v1/repositories/team/app/manifests/${image.manifest.digest}`, { method: 'DELETE' });
  t.equal(delManifest.status, 202, 'and the cached manifest');
  await delManifest.arrayBuffer();
  const both = (await rx.waitFor((es) => es.filter((e) => e.action === 'delete').length >= 2)).filter((e) => e.action === 'delete');
  t.match(both[1]?.target, { repository: 'team/app', digest: image.manifest.digest });
  t.strictSame(await client.pull('team/app', '1'), [], 'the next pull fetches it again');
});
