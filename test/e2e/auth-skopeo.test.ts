import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { builtinAuth, writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { layoutTagDigest, makeImageLayout } from '../helpers/oci-layout.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';

/**
 * Issue 4 with a real client: skopeo logs in to berth's built-in token server and pushes/pulls; a wrong password is
 * refused; a pull-only user cannot push (nothing is written); anonymous pull of a public repository works and
 * anonymous push does not.
 */
t.test('skopeo against berth with the built-in token server', async (t) => {
  const dir = await tempDir(t, 'berth-e2e-auth-');
  const users = await writeUsers(dir);
  const berth = await startBerth(t, { auth: builtinAuth(users) });
  const src = await tempDir(t, 'berth-e2e-auth-src-');
  const layout = await makeImageLayout(src, { layers: [4096, 70_000], tag: 'v1' });
  const ref = (repo: string) => dockerRef(berth.url, repo, 'v1');
  const host = berth.url.replace(/^http:\/\//, '');
  const repoDir = (repo: string) => join(berth.root, 'docker/registry/v2/repositories', repo);

  await t.test('without credentials the registry challenges for a Bearer token', async (t) => {
    const res = await fetch(`${berth.url}/v2/team/app/manifests/v1`);
    t.equal(res.status, 401);
    t.equal(res.headers.get('www-authenticate'), `Bearer realm="${berth.url}/auth/token",service="berth",scope="repository:team/app:pull"`);
    t.equal(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAUTHORIZED');
  });

  await t.test('skopeo login: wrong password refused, right password accepted', async (t) => {
    const authfile = join(dir, 'auth.json');
    await t.rejects(
      skopeo(['login', '--tls-verify=false', '--authfile', authfile, '-u', 'alice', '-p', 'wrong', host]),
      /401|unauthorized|authentication required|invalid username/i,
    );
    await skopeo(['login', '--tls-verify=false', '--authfile', authfile, '-u', 'alice', '-p', 'alice-pw', host]);
    t.ok(existsSync(authfile), 'credentials stored after a successful login');
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', '--authfile', authfile, `oci:${src}:v1`, ref('team/app')]);
    t.ok(existsSync(repoDir('team/app')), 'pushed with the stored login');
  });

  await t.test('a pull-only user pulls but cannot push', async (t) => {
    const dst = await tempDir(t, 'berth-e2e-auth-dst-');
    await skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', '--src-creds', 'bob:bob-pw', ref('team/app'), `oci:${dst}:v1`]);
    t.equal(await layoutTagDigest(dst, 'v1'), layout.digest, 'bob pulled the image alice pushed');
    await t.rejects(
      skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', 'bob:bob-pw', `oci:${src}:v1`, ref('team/bobs')]),
      /401|403|unauthorized|denied|authentication required/i,
    );
    t.notOk(existsSync(repoDir('team/bobs')), 'nothing written for the refused push');
    await t.rejects(
      skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', 'bob:wrong', `oci:${src}:v1`, ref('team/app')]),
      /401|unauthorized|authentication required|invalid username/i,
      'wrong password with --creds',
    );
  });

  await t.test('anonymous pull of a public repository, no anonymous push', async (t) => {
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', 'alice:alice-pw', `oci:${src}:v1`, ref('public/base')]);
    const dst = await tempDir(t, 'berth-e2e-auth-anon-');
    await skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', '--src-no-creds', ref('public/base'), `oci:${dst}:v1`]);
    t.equal(await layoutTagDigest(dst, 'v1'), layout.digest, 'anonymous pull of public/base');
    await t.rejects(
      skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-no-creds', `oci:${src}:v1`, ref('public/other')]),
      /401|403|unauthorized|denied|authentication required/i,
    );
    t.notOk(existsSync(repoDir('public/other')), 'nothing written for the anonymous push');
    await t.rejects(
      skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', '--src-no-creds', ref('team/app'), `oci:${dst}:v2`]),
      /401|403|unauthorized|denied|authentication required/i,
      'anonymous pull of a private repository refused',
    );
  });
});

t.test('skopeo against berth with auth.htpasswd (Basic)', async (t) => {
  const dir = await tempDir(t, 'berth-e2e-basic-');
  const users = await writeUsers(dir, { carol: 'carol-pw' });
  const berth = await startBerth(t, { auth: { htpasswd: { realm: 'berth-basic', path: users } } });
  const src = await tempDir(t, 'berth-e2e-basic-src-');
  const layout = await makeImageLayout(src, { layers: [3000], tag: 'v1' });
  const ref = dockerRef(berth.url, 'basic/app', 'v1');

  const res = await fetch(`${berth.url}/v2/`);
  t.equal(res.status, 401);
  t.equal(res.headers.get('www-authenticate'), 'Basic realm="berth-basic"');
  await t.rejects(
    skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', 'carol:nope', `oci:${src}:v1`, ref]),
    /401|unauthorized|authentication required|invalid username/i,
  );
  t.notOk(existsSync(join(berth.root, 'docker/registry/v2/repositories/basic/app')), 'nothing written with a wrong password');
  await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', 'carol:carol-pw', `oci:${src}:v1`, ref]);
  const dst = await tempDir(t, 'berth-e2e-basic-dst-');
  await skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', '--src-creds', 'carol:carol-pw', ref, `oci:${dst}:v1`]);
  t.equal(await layoutTagDigest(dst, 'v1'), layout.digest);
});
