import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { builtinAuth, writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { captureAccessLog, containersEnv, headDigest, registryHost, skipUnlessInstalled, type ContainersEnv } from '../helpers/containers.js';
import { tempDir } from '../helpers/ports.js';

/**
 * Issue 4 with the real podman (4.3): "`podman login` against berth with the token server: push and pull work;
 * wrong password → 401; a user with pull-only access cannot push (denied, nothing written); anonymous pull of a
 * public repo works, anonymous push does not."
 */

const REFUSED = /401|403|unauthorized|denied|authentication required|invalid username/i;

/** The digest podman recorded for the local image `ref`. */
async function localDigest(env: ContainersEnv, ref: string): Promise<string> {
  return (await env.podman(['image', 'inspect', '--format', '{{.Digest}}', ref])).stdout.trim();
}

t.test("podman login and push/pull against berth's built-in token server", { skip: skipUnlessInstalled('podman', 'buildah') }, async (t) => {
  const dir = await tempDir(t, 'berth-e2e-podman-auth-');
  const users = await writeUsers(dir);
  const log = captureAccessLog();
  const berth = await startBerth(t, { log: { level: 'info', accesslog: { disabled: false } }, auth: builtinAuth(users) }, { logger: log.logger });
  const host = registryHost(berth.url);
  const repoDir = (repo: string) => join(berth.root, 'docker/registry/v2/repositories', repo);
  /** Bearer token for `scope` from berth's token endpoint as alice, to check results through the API. */
  const aliceToken = async (scope: string): Promise<string> => {
    const res = await fetch(`${berth.url}/auth/token?service=berth&scope=${encodeURIComponent(scope)}`, {
      headers: { authorization: `Basic ${Buffer.from('alice:alice-pw').toString('base64')}` },
    });
    return ((await res.json()) as { token: string }).token;
  };

  // alice builds a small image locally (no registry involved yet).
  const alice = await containersEnv(t);
  const file = join(dir, 'app.bin');
  await writeFile(file, randomBytes(200_000));
  const container = (await alice.buildah(['from', '--signature-policy', alice.policy, 'scratch'])).stdout.trim();
  await alice.buildah(['copy', container, file, '/app.bin']);
  await alice.buildah(['config', '--cmd', '["/app.bin"]', container]);
  await alice.buildah(['commit', '--signature-policy', alice.policy, container, 'localhost/app:1']);
  let pushed = '';

  await t.test('podman login: a wrong password is refused, the right one stored', async (t) => {
    await t.rejects(
      alice.podman(['login', '--tls-verify=false', '-u', 'alice', '--password-stdin', host], { stdin: 'wrong-pw\n' }),
      REFUSED,
      'wrong password: login fails',
    );
    t.same(JSON.parse(await readFile(alice.authFile, 'utf8')), { auths: {} }, 'nothing stored for a failed login');
    t.ok(
      log.entries().some((e) => e.url.startsWith('/auth/token') && e.status === 401),
      `berth answered the token request with 401\n${log.dump()}`,
    );
    const out = await alice.podman(['login', '--tls-verify=false', '-u', 'alice', '--password-stdin', host], { stdin: 'alice-pw\n' });
    t.match(out.stdout, /Login Succeeded/i);
    const auths = (JSON.parse(await readFile(alice.authFile, 'utf8')) as { auths: Record<string, { auth: string }> }).auths;
    t.equal(Buffer.from(auths[host]?.auth ?? '', 'base64').toString(), 'alice:alice-pw', 'credentials stored for berth');
  });

  await t.test('podman push and pull with the stored login', async (t) => {
    const digestFile = join(alice.dir, 'pushed.digest');
    await alice.podman(['push', ...alice.remoteFlags, '--digestfile', digestFile, 'localhost/app:1', `${host}/team/app:1`]);
    pushed = (await readFile(digestFile, 'utf8')).trim();
    t.match(pushed, /^sha256:[0-9a-f]{64}$/);
    const token = await aliceToken('repository:team/app:pull');
    t.equal(await headDigest(berth.url, 'team/app', '1', { authorization: `Bearer ${token}` }), pushed, 'berth has the manifest podman pushed');
    t.equal(await headDigest(berth.url, 'team/app', '1'), undefined, 'and does not show it without a token');
    // alice pulls it back into her (separate) second storage, with the same login.
    const again = await containersEnv(t);
    await writeFile(again.authFile, await readFile(alice.authFile));
    await again.podman(['pull', ...again.remoteFlags, `${host}/team/app:1`]);
    t.equal(await localDigest(again, `${host}/team/app:1`), pushed, 'pulled back with the same digest');
  });

  await t.test('a pull-only user pulls but cannot push', async (t) => {
    const bob = await containersEnv(t);
    await bob.podman(['login', '--tls-verify=false', '-u', 'bob', '--password-stdin', host], { stdin: 'bob-pw\n' });
    await bob.podman(['pull', ...bob.remoteFlags, `${host}/team/app:1`]);
    t.equal(await localDigest(bob, `${host}/team/app:1`), pushed, 'bob pulled what alice pushed');
    const before = log.entries().length;
    await t.rejects(bob.podman(['push', ...bob.remoteFlags, `${host}/team/app:1`, `${host}/team/bobs:1`]), REFUSED, 'bob may not push');
    t.notOk(existsSync(repoDir('team/bobs')), 'nothing written for the refused push');
    // bob may pull team/** (so a HEAD of a blob in team/bobs is a plain 404), but every write must be refused.
    const writes = log
      .entries()
      .slice(before)
      .filter((e) => e.url.startsWith('/v2/team/bobs/') && !['GET', 'HEAD'].includes(e.method));
    t.ok(writes.length > 0, 'podman did try to upload');
    t.ok(
      writes.every((e) => e.status === 401 || e.status === 403),
      `every write to team/bobs was refused\n${log.dump()}`,
    );
    await t.rejects(
      bob.podman(['push', ...bob.remoteFlags, `${host}/team/app:1`, `${host}/team/app:2`]),
      REFUSED,
      'nor overwrite tags in a repository he can pull',
    );
    const token = await aliceToken('repository:team/app:pull');
    const tags = (await (await fetch(`${berth.url}/v2/team/app/tags/list`, { headers: { authorization: `Bearer ${token}` } })).json()) as {
      tags: string[];
    };
    t.same(tags.tags, ['1'], 'no tag was added');
  });

  await t.test('anonymous pull of a public repository works, anonymous push does not', async (t) => {
    const digestFile = join(alice.dir, 'public.digest');
    await alice.podman(['push', ...alice.remoteFlags, '--digestfile', digestFile, 'localhost/app:1', `${host}/public/app:1`]);
    const publicDigest = (await readFile(digestFile, 'utf8')).trim();
    const anon = await containersEnv(t);
    await anon.podman(['pull', ...anon.remoteFlags, `${host}/public/app:1`]);
    t.equal(await localDigest(anon, `${host}/public/app:1`), publicDigest, 'anonymous pull of public/app');
    await t.rejects(anon.podman(['push', ...anon.remoteFlags, `${host}/public/app:1`, `${host}/public/other:1`]), REFUSED);
    t.notOk(existsSync(repoDir('public/other')), 'nothing written for the anonymous push');
    await t.rejects(anon.podman(['pull', ...anon.remoteFlags, `${host}/team/app:1`]), REFUSED, 'anonymous pull of a private repository refused');
  });

  await t.test('podman logout forgets the credentials', async (t) => {
    await alice.podman(['logout', host]);
    const auths = (JSON.parse(await readFile(alice.authFile, 'utf8')) as { auths: Record<string, unknown> }).auths;
    t.notOk(host in auths, 'credentials removed');
    await t.rejects(alice.podman(['push', ...alice.remoteFlags, 'localhost/app:1', `${host}/team/after-logout:1`]), REFUSED);
    t.notOk(existsSync(repoDir('team/after-logout')), 'nothing written after logout');
  });
});
