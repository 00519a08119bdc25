import t from 'tap';
import { RegistryClient, randomLayer } from '../helpers/registry-client.js';
import { startBerth } from '../helpers/berth.js';
import { TEAM_USERS, writeUsers } from '../helpers/auth.js';
import { tempDir } from '../helpers/ports.js';

/**
 * With berth's token server: anyone may pull `public/**`, bob may pull `team/**` and see the catalog, alice may do
 * everything. Every list (`_catalog`, search, the API) holds only what the caller may pull.
 */
const RULES = [
  { who: 'anonymous', repository: 'public/**', actions: ['pull'] },
  { who: 'alice', repository: '**', actions: ['*'] },
  { who: 'alice', registry: 'catalog', actions: ['*'] },
  { who: 'bob', repository: 'team/**', actions: ['pull'] },
  { who: 'bob', registry: 'catalog', actions: ['*'] },
];

interface Json {
  [k: string]: unknown;
}

t.test('lists are filtered by pull access; repository operations need their action', async (t) => {
  const dir = await tempDir(t, 'berth-catalog-auth-');
  const users = await writeUsers(dir);
  const berth = await startBerth(t, { auth: { builtin: { users, rules: RULES } } });

  async function token(user: string | null, scope: string): Promise<string> {
    const headers: Record<string, string> = {};
    if (user) headers.authorization = `Basic ${Buffer.from(`${user}:${TEAM_USERS[user]}`).toString('base64')}`;
    const res = await fetch(`${berth.url}/auth/token?service=berth&scope=${encodeURIComponent(scope)}`, { headers });
    t.equal(res.status, 200, `token for ${user ?? 'anonymous'}`);
    return ((await res.json()) as { token: string }).token;
  }
  async function get(path: string, bearer?: string, method = 'GET'): Promise<{ status: number; body: Json; headers: Headers }> {
    const res = await fetch(`${berth.url}${path}`, { method, headers: bearer ? { authorization: `Bearer ${bearer}` } : {} });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Json) : {}, headers: res.headers };
  }

  // alice pushes into three namespaces (the client sends her token on every request).
  const aliceAll = await token('alice', 'repository:team/app:pull,push repository:private/secret:pull,push repository:public/base:pull,push');
  const origFetch = globalThis.fetch;
  const client = new RegistryClient(berth.url);
  globalThis.fetch = (input, init = {}) =>
    origFetch(input, { ...init, headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${aliceAll}` } });
  try {
    for (const repo of ['team/app', 'private/secret', 'public/base']) await client.pushImage(repo, '1', [randomLayer()]);
  } finally {
    globalThis.fetch = origFetch;
  }

  const names = (b: Json) => (b.repositories as (string | Json)[]).map((x) => (typeof x === 'string' ? x : (x.name as string)));

  t.test('_catalog', async (t) => {
    t.strictSame(names((await get('/v2/_catalog', await token('alice', 'registry:catalog:*'))).body), ['private/secret', 'public/base', 'team/app']);
    t.strictSame(
      names((await get('/v2/_catalog', await token('bob', 'registry:catalog:*'))).body),
      ['public/base', 'team/app'],
      'bob never sees private/secret (anonymous rules apply to him too)',
    );
    t.equal((await get('/v2/_catalog')).status, 401, 'anonymous: no catalog scope');
  });

  t.test('search: with a token for registry:catalog:search, and anonymous without credentials', async (t) => {
    const bob = await get('/v1/search?q=e', await token('bob', 'registry:catalog:search'));
    t.equal(bob.status, 200);
    t.strictSame(
      (bob.body.results as Json[]).map((r) => r.name),
      ['public/base', 'team/app'],
    );
    const anon = await get('/v1/search?q=e');
    t.equal(anon.status, 200);
    t.strictSame(
      (anon.body.results as Json[]).map((r) => r.name),
      ['public/base'],
      'anonymous: what anonymous may pull',
    );
    const anonToken = await get('/v1/search?q=secret', await token(null, 'registry:catalog:search'));
    t.equal(anonToken.status, 200, 'the search scope is granted to everyone');
    t.equal(anonToken.body.num_results, 0);
    const bad = await get('/v1/search?q=e', 'not-a-token');
    t.equal(bad.status, 401, 'a bad token is refused, not taken as anonymous');
  });

  t.test('API lists', async (t) => {
    const bob = await get('/api/v1/repositories', await token('bob', ''));
    t.equal(bob.status, 200);
    t.strictSame(names(bob.body), ['public/base', 'team/app']);
    t.strictSame(names((await get('/api/v1/repositories?q=secret', await token('bob', ''))).body), []);
    t.strictSame(names((await get('/api/v1/repositories')).body), ['public/base']);
    t.strictSame(names((await get('/api/v1/repositories', await token('alice', ''))).body), ['private/secret', 'public/base', 'team/app']);
  });

  t.test('API per repository: pull to read, delete to delete', async (t) => {
    const bobTeam = await token('bob', 'repository:team/app:pull,delete');
    t.equal((await get('/api/v1/repositories/team/app/tags', bobTeam)).status, 200);
    const denied = await get('/api/v1/repositories/private/secret/tags', await token('bob', 'repository:private/secret:pull'));
    t.equal(denied.status, 401);
    t.equal((denied.body.errors as Json[])[0]?.code, 'UNAUTHORIZED');
    t.match(denied.headers.get('www-authenticate') ?? '', /scope="repository:private\/secret:pull"/);
    t.equal((await get('/api/v1/repositories/team/app', bobTeam, 'DELETE')).status, 401, 'bob may not delete');
    t.equal((await get('/api/v1/usage', await token('bob', 'registry:catalog:*'))).status, 200);
    t.equal((await get('/api/v1/usage')).status, 401);
    const aliceDel = await token('alice', 'repository:team/app:delete');
    t.equal((await get('/api/v1/repositories/team/app', aliceDel, 'DELETE')).status, 202);
    t.strictSame(names((await get('/v2/_catalog', await token('bob', 'registry:catalog:*'))).body), ['public/base']);
  });
});

t.test('htpasswd: anonymous lists are refused, users see everything', async (t) => {
  const dir = await tempDir(t, 'berth-catalog-htpasswd-');
  const users = await writeUsers(dir);
  const berth = await startBerth(t, { auth: { htpasswd: { realm: 'berth', path: users } } });
  const basic = `Basic ${Buffer.from(`bob:${TEAM_USERS.bob}`).toString('base64')}`;
  const anon = await fetch(`${berth.url}/api/v1/repositories`);
  t.equal(anon.status, 401);
  t.match(anon.headers.get('www-authenticate') ?? '', /^Basic /);
  t.equal((await fetch(`${berth.url}/v1/search?q=x`)).status, 401);
  const ok = await fetch(`${berth.url}/api/v1/repositories`, { headers: { authorization: basic } });
  t.equal(ok.status, 200);
  t.strictSame(await ok.json(), { repositories: [], next: null });
});
