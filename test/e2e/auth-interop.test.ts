import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { SignJWT } from 'jose';
import { libtrustKeyId, selfSignedCertificate } from '../../src/auth/x509.js';
import { builtinAuth, writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { startDockerRegistry } from '../helpers/docker-registry.js';
import { layoutTagDigest, makeImageLayout } from '../helpers/oci-layout.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';

/**
 * Issue 4 interop: Debian's docker-registry (Distribution 2.8) with `auth.token` whose realm is berth's token
 * endpoint and whose `rootcertbundle` is berth's certificate accepts berth's tokens: skopeo pushes to and pulls from
 * it with credentials checked by berth. This proves berth's tokens follow the token spec as Distribution reads it
 * (x5c chain to the bundle, libtrust `kid`, string `aud`, `access` claim).
 */
const SERVICE = 'interop-registry';

t.test('Distribution 2.8 accepts tokens from berth', async (t) => {
  const dir = await tempDir(t, 'berth-e2e-interop-');
  const users = await writeUsers(dir);
  const berth = await startBerth(t, { auth: builtinAuth(users, { service: SERVICE, issuer: 'berth' }) });
  const certRes = await fetch(`${berth.url}/auth/cert.pem`);
  t.equal(certRes.status, 200, 'berth publishes its certificate');
  const bundle = join(dir, 'berth-cert.pem');
  await writeFile(bundle, await certRes.text());

  const regRoot = await tempDir(t, 'berth-e2e-interop-reg-');
  const registry = await startDockerRegistry(t, {
    rootDirectory: regRoot,
    extraConfig: { auth: { token: { realm: `${berth.url}/auth/token`, service: SERVICE, issuer: 'berth', rootcertbundle: bundle } } },
  });
  const challenge = await fetch(`${registry.url}/v2/`);
  t.equal(challenge.status, 401, 'docker-registry requires a token');
  t.match(challenge.headers.get('www-authenticate') ?? '', `Bearer realm="${berth.url}/auth/token",service="${SERVICE}"`);

  const src = await tempDir(t, 'berth-e2e-interop-src-');
  const layout = await makeImageLayout(src, { layers: [5000, 120_000], tag: 'v1' });
  const ref = (repo: string) => dockerRef(registry.url, repo, 'v1');

  await t.test('skopeo pushes and pulls with credentials checked by berth', async (t) => {
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', 'alice:alice-pw', `oci:${src}:v1`, ref('team/app')]);
    t.ok(existsSync(join(regRoot, 'docker/registry/v2/repositories/team/app')), 'docker-registry stored the push');
    const dst = await tempDir(t, 'berth-e2e-interop-dst-');
    await skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', '--src-creds', 'bob:bob-pw', ref('team/app'), `oci:${dst}:v1`]);
    t.equal(await layoutTagDigest(dst, 'v1'), layout.digest, 'pulled back the same image');
  });

  await t.test('what berth does not grant, Distribution refuses', async (t) => {
    await t.rejects(
      skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', 'bob:bob-pw', `oci:${src}:v1`, ref('team/bobs')]),
      /401|403|unauthorized|denied|authentication required/i,
    );
    t.notOk(existsSync(join(regRoot, 'docker/registry/v2/repositories/team/bobs')), 'nothing written');
    await t.rejects(
      skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', '--src-creds', 'alice:wrong', ref('team/app'), `oci:${src}:v2`]),
      /401|unauthorized|invalid username/i,
      'wrong password',
    );
  });

  await t.test('kid-only tokens: the libtrust key id matches what Distribution computes', async (t) => {
    const key = createPrivateKey(await readFile(join(berth.root, 'berth', 'token-key.pem')));
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: 'berth', sub: 'alice', aud: SERVICE, exp: now + 120, nbf: now - 1, iat: now, jti: 'kid-test', access: [] };
    const kid = libtrustKeyId(createPublicKey(key));
    const good = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid }).sign(key);
    const res = await fetch(`${registry.url}/v2/`, { headers: { authorization: `Bearer ${good}` } });
    t.equal(res.status, 200, "Distribution found the key by berth's libtrust kid");

    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const forged = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid }).sign(other.privateKey);
    t.equal(
      (await fetch(`${registry.url}/v2/`, { headers: { authorization: `Bearer ${forged}` } })).status,
      401,
      'control: a forged token is refused',
    );

    const foreignCert = selfSignedCertificate(other.privateKey, other.publicKey, { commonName: 'not berth' }).replace(/-----[A-Z ]+-----|\s/g, '');
    const x5cForged = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'JWT', x5c: [foreignCert] }).sign(other.privateKey);
    t.equal(
      (await fetch(`${registry.url}/v2/`, { headers: { authorization: `Bearer ${x5cForged}` } })).status,
      401,
      'control: an untrusted x5c is refused',
    );
  });
});
