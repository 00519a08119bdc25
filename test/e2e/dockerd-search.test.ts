import t from 'tap';
import { TEAM_USERS, writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { registryHost } from '../helpers/containers.js';
import { skipUnlessDockerd, startDockerd } from '../helpers/dockerd.js';
import { tempDir } from '../helpers/ports.js';
import { OCI_CONFIG, OCI_MANIFEST, RegistryClient, randomLayer } from '../helpers/registry-client.js';

/**
 * `docker search HOST:PORT/term` from the Docker daemon (Debian's docker.io 20.10). What it calls, seen with a real
 * dockerd: `GET /v1/_ping`, then `GET /v1/search?q=<term>&n=25` -- without credentials when not logged in; after
 * `docker login` against a token server (which hands it a refresh token), it pings `/v2/`, redeems the refresh
 * token at the realm for `registry:catalog:search` and sends the search with that Bearer token.
 */

/** `docker search` output rows: [name, description]. */
function rows(stdout: string): string[][] {
  return stdout
    .trim()
    .split('\n')
    .slice(1)
    .filter((l) => l.trim() !== '')
    .map((l) => l.split(/\s{2,}/).slice(0, 2));
}

async function pushDescribed(client: RegistryClient, repo: string, description: string): Promise<void> {
  const layer = randomLayer();
  const l = await client.pushBlob(repo, layer);
  const config = Buffer.from(
    JSON.stringify({ os: 'linux', architecture: 'amd64', config: { Labels: { 'org.opencontainers.image.description': description } } }),
  );
  const c = await client.pushBlob(repo, config);
  await client.putManifest(
    repo,
    '1',
    {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: c.digest, size: config.length },
      layers: [{ mediaType: l.mediaType, digest: l.digest, size: l.size }],
    },
    OCI_MANIFEST,
  );
}

t.test('docker search without auth', { skip: skipUnlessDockerd() }, async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  await pushDescribed(client, 'tools/nginx-proxy', 'A proxy');
  await pushDescribed(client, 'nginx', 'The web server');
  await pushDescribed(client, 'redis', 'A cache');
  const dockerd = await startDockerd(t);
  const host = registryHost(berth.url);
  const out = await dockerd.docker(['search', `${host}/NGINX`]);
  t.strictSame(rows(out.stdout), [
    ['nginx', 'The web server'],
    ['tools/nginx-proxy', 'A proxy'],
  ]);
  const none = await dockerd.docker(['search', `${host}/nothing-like-it`]);
  t.strictSame(rows(none.stdout), []);
});

t.test('docker search with the token server: anonymous, then after docker login', { skip: skipUnlessDockerd() }, async (t) => {
  const dir = await tempDir(t, 'berth-search-');
  const users = await writeUsers(dir);
  const rules = [
    { who: 'anonymous', repository: 'public/**', actions: ['pull'] },
    { who: 'alice', repository: '**', actions: ['*'] },
    { who: 'bob', repository: 'team/**', actions: ['pull'] },
  ];
  const berth = await startBerth(t, { auth: { builtin: { users, rules } } });
  const token = async () => {
    const basic = Buffer.from(`alice:${TEAM_USERS.alice}`).toString('base64');
    const scope = ['public/app', 'team/app', 'private/app'].map((r) => `repository:${r}:pull,push`).join(' ');
    const res = await fetch(`${berth.url}/auth/token?service=berth&scope=${encodeURIComponent(scope)}`, {
      headers: { authorization: `Basic ${basic}` },
    });
    return ((await res.json()) as { token: string }).token;
  };
  const bearer = await token();
  const origFetch = globalThis.fetch;
  globalThis.fetch = (input, init = {}) =>
    origFetch(input, { ...init, headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${bearer}` } });
  try {
    const client = new RegistryClient(berth.url);
    for (const repo of ['public/app', 'team/app', 'private/app']) await pushDescribed(client, repo, `the ${repo.split('/')[0]} app`);
  } finally {
    globalThis.fetch = origFetch;
  }
  const dockerd = await startDockerd(t);
  const host = registryHost(berth.url);
  const anonymous = await dockerd.docker(['search', `${host}/app`]);
  t.strictSame(rows(anonymous.stdout), [['public/app', 'the public app']], 'anonymous: what anonymous may pull');

  await dockerd.docker(['login', '-u', 'bob', '-p', TEAM_USERS.bob as string, host]);
  const bob = await dockerd.docker(['search', `${host}/app`]);
  t.strictSame(rows(bob.stdout), [
    ['public/app', 'the public app'],
    ['team/app', 'the team app'],
  ]);
  t.notMatch(bob.stdout, /private/, 'never a repository bob may not pull');

  await dockerd.docker(['logout', host]);
  await dockerd.docker(['login', '-u', 'alice', '-p', TEAM_USERS.alice as string, host]);
  const alice = await dockerd.docker(['search', `${host}/app`]);
  t.equal(rows(alice.stdout).length, 3);
});
