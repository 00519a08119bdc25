import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, stat, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { fastify } from 'fastify';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { pino } from 'pino';
import { createAuth, type AuthModule } from '../../src/auth/index.js';
import { userAdd } from '../../src/auth/htpasswd.js';
import { libtrustKeyId, selfSignedCertificate } from '../../src/auth/x509.js';
import type { AccessRecord } from '../../src/auth/access.js';
import { configFrom } from '../../src/config/config.js';
import type { RawSection } from '../../src/config/fields.js';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { RegistryError } from '../../src/errors/registry-error.js';
import { tempDir } from '../helpers/ports.js';
import { tokenRoutes } from '../../src/http/token-routes.js';

const logger = pino({ level: 'silent' });

interface Server {
  url: string;
  auth: AuthModule;
  root: string;
  dir: string;
}

async function start(t: Test, builtin: RawSection, extra: RawSection = {}, dirIn?: string): Promise<Server> {
  const dir = dirIn ?? (await tempDir(t, 'berth-token-'));
  const root = join(dir, 'storage');
  const config = configFrom({
    storage: { filesystem: { rootdirectory: root } },
    auth: { builtin: { users: join(dir, 'htpasswd'), ...builtin }, ...extra },
  });
  const driver = new FilesystemDriver({ rootDirectory: root });
  const auth = await createAuth(config, { driver, logger, storageRoot: root });
  const app = fastify();
  if (!auth.tokenServer) throw new Error('no token server');
  await app.register(tokenRoutes(auth.tokenServer.issuer, auth.tokenServer.signer));
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(async () => {
    await app.close();
    await auth.close();
  });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { url: `http://127.0.0.1:${port}`, auth, root, dir };
}

const basic = (u: string, p: string) => ({ authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });

async function getToken(s: Server, scopes: string[], headers: Record<string, string> = {}, extra = ''): Promise<Response> {
  const q = new URLSearchParams({ service: 'registry.test' });
  for (const sc of scopes) q.append('scope', sc);
  return fetch(`${s.url}/auth/token?${q.toString()}${extra}`, { headers });
}

async function tokenAccess(res: Response): Promise<{ token: string; access: AccessRecord[]; body: Record<string, unknown> }> {
  const body = (await res.json()) as Record<string, unknown>;
  const token = String(body.token);
  return { token, access: decodeJwt(token).access as AccessRecord[], body };
}

const bearer = (token: string) => ({ method: 'GET', ip: '127.0.0.1', headers: { authorization: `Bearer ${token}` } });
const repo = (name: string, ...actions: AccessRecord['actions']): AccessRecord => ({ type: 'repository', name, actions });

t.test('token server', async (t) => {
  const dir = await tempDir(t, 'berth-token-');
  await userAdd(join(dir, 'htpasswd'), 'alice', 'alice-pw');
  await userAdd(join(dir, 'htpasswd'), 'bob', 'bob-pw');
  await userAdd(join(dir, 'htpasswd'), 'admin', 'admin-pw');
  const rulesFile = join(dir, 'rules.yaml');
  await writeFile(
    rulesFile,
    [
      'groups: { admins: [admin] }',
      'rules:',
      '  - { who: anonymous, repository: "public/*", actions: [pull] }',
      '  - { who: alice, repository: "team/**", actions: [pull, push] }',
      '  - { who: authenticated, repository: "${account}/**", actions: ["*"] }',
      '  - { who: bob, repository: "team/app", actions: [pull] }',
      '  - { who: group:admins, repository: "**", actions: ["*"] }',
      '  - { who: group:admins, registry: catalog, actions: ["*"] }',
      '',
    ].join('\n'),
  );
  const s = await start(t, { rules: rulesFile, service: 'registry.test', issuer: 'berth-test' }, {}, dir);

  t.test('generated key and certificate', async (t) => {
    const keyFile = join(s.root, 'berth', 'token-key.pem');
    t.equal((await stat(keyFile)).mode & 0o777, 0o600, 'key file mode 0600');
    t.equal((await stat(join(s.root, 'berth'))).mode & 0o777, 0o700, 'key directory mode 0700');
    t.match(await readFile(keyFile, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);

    const certRes = await fetch(`${s.url}/auth/cert.pem`);
    t.equal(certRes.status, 200);
    const certPem = await certRes.text();
    t.equal(certPem, await readFile(join(s.root, 'berth', 'token-cert.pem'), 'utf8'), 'served cert = stored cert');
    const cert = new X509Certificate(certPem);

    const jwks = (await (await fetch(`${s.url}/auth/jwks.json`)).json()) as { keys: Array<Record<string, unknown>> };
    t.equal(jwks.keys.length, 1);
    const { token } = await tokenAccess(await getToken(s, []));
    const header = decodeProtectedHeader(token);
    t.equal(header.alg, 'ES256');
    t.equal(header.kid, libtrustKeyId(cert.publicKey), 'kid is the libtrust id of the certificate key');
    t.equal(jwks.keys[0]?.kid, header.kid);
    t.same(header.x5c, [cert.raw.toString('base64')], 'x5c carries the certificate');
    t.equal(jwks.keys[0]?.kty, 'EC');
    t.notOk('d' in (jwks.keys[0] ?? {}), 'no private part published');

    // A second start over the same storage keeps the key (and so the kid).
    const again = await start(t, { rules: rulesFile, service: 'registry.test', issuer: 'berth-test' }, {}, dir);
    const second = decodeProtectedHeader((await tokenAccess(await getToken(again, []))).token);
    t.equal(second.kid, header.kid, 'same key after restart');
  });

  t.test('anonymous gets only anonymous rules', async (t) => {
    const res = await getToken(s, ['repository:public/base:pull,push', 'repository:team/app:pull']);
    t.equal(res.status, 200);
    t.equal(res.headers.get('cache-control'), 'no-store');
    const { token, access, body } = await tokenAccess(res);
    t.same(access, [repo('public/base', 'pull')], 'push dropped, team/app absent');
    t.equal(body.access_token, token);
    t.equal(body.expires_in, 300);
    t.match(String(body.issued_at), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    t.equal(decodeJwt(token).sub, '');
    t.equal(decodeJwt(token).aud, 'registry.test', 'aud is a plain string (Distribution 2.8 wants one)');
    t.equal(decodeJwt(token).iss, 'berth-test');
    t.notOk('refresh_token' in body);

    t.ok(await s.auth.authorizer.authorize(bearer(token), [repo('public/base', 'pull')]), 'registry accepts it for pull');
    const push = (await s.auth.authorizer.authorize(bearer(token), [repo('public/base', 'pull', 'push')]).catch((e: unknown) => e)) as RegistryError;
    t.equal(push.kind, 'UNAUTHORIZED', 'anonymous push refused');
    t.match(push.headers['WWW-Authenticate'], /error="insufficient_scope"/);
    t.same(await s.auth.authorizer.authorize(bearer(token), []), { granted: [repo('public/base', 'pull')] }, 'base route with an anonymous token');
    const star = await tokenAccess(await getToken(s, ['repository:public/a/b:pull']));
    t.same(star.access, [], '* does not cross /');
  });

  t.test('users get the intersection of requested and allowed', async (t) => {
    const alice = await tokenAccess(
      await getToken(
        s,
        ['repository:team/app:pull,push,delete', 'repository:other/x:pull', 'repository:alice/tools:delete registry:catalog:*'],
        basic('alice', 'alice-pw'),
      ),
    );
    t.same(alice.access, [repo('team/app', 'pull', 'push'), repo('alice/tools', 'delete')]);
    t.equal(decodeJwt(alice.token).sub, 'alice');
    const principal = await s.auth.authorizer.authorize(bearer(alice.token), [repo('team/app', 'pull', 'push')]);
    t.equal(principal.account, 'alice');
    await t.rejects(s.auth.authorizer.authorize(bearer(alice.token), [repo('other/x', 'pull')]), RegistryError, 'scope for another repository');

    const bob = await tokenAccess(await getToken(s, ['repository:team/app:pull,push', 'repository:public/base:pull'], basic('bob', 'bob-pw')));
    t.same(bob.access, [repo('team/app', 'pull'), repo('public/base', 'pull')], 'pull-only user cannot push; anonymous rules apply to users');

    const admin = await tokenAccess(await getToken(s, ['registry:catalog:*', 'repository:any/thing:push,delete'], basic('admin', 'admin-pw')));
    t.same(admin.access, [{ type: 'registry', name: 'catalog', actions: ['*'] }, repo('any/thing', 'push', 'delete')]);
  });

  t.test('wrong password and unknown service', async (t) => {
    const res = await getToken(s, ['repository:team/app:pull'], basic('alice', 'nope'));
    t.equal(res.status, 401);
    const body = (await res.json()) as { errors: Array<{ code: string }> };
    t.equal(body.errors[0]?.code, 'UNAUTHORIZED');
    const unknown = await getToken(s, [], basic('ghost', 'alice-pw'));
    t.equal(unknown.status, 401);
    const svc = await fetch(`${s.url}/auth/token?service=elsewhere`);
    t.equal(svc.status, 400);
  });

  t.test('OAuth2 password and refresh_token grants', async (t) => {
    const post = (form: Record<string, string>) =>
      fetch(`${s.url}/auth/token`, {
        method: 'POST',
        body: new URLSearchParams(form),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
    const first = await post({
      grant_type: 'password',
      username: 'alice',
      password: 'alice-pw',
      service: 'registry.test',
      client_id: 'test',
      access_type: 'offline',
      scope: 'repository:team/app:pull repository:team/lib:push',
    });
    t.equal(first.status, 200);
    const body = (await first.json()) as Record<string, string>;
    t.same(decodeJwt(body.access_token ?? '').access, [repo('team/app', 'pull'), repo('team/lib', 'push')]);
    t.type(body.refresh_token, 'string');
    const refresh = body.refresh_token ?? '';

    const noOffline = (await (
      await post({ grant_type: 'password', username: 'alice', password: 'alice-pw', service: 'registry.test' })
    ).json()) as Record<string, string>;
    t.notOk('refresh_token' in noOffline, 'no refresh token unless access_type=offline');

    await t.rejects(s.auth.authorizer.authorize(bearer(refresh), []), RegistryError, 'a refresh token is not an access token');

    const second = await post({
      grant_type: 'refresh_token',
      refresh_token: refresh,
      service: 'registry.test',
      scope: 'repository:team/other:pull,push',
    });
    t.equal(second.status, 200);
    const token2 = ((await second.json()) as Record<string, string>).access_token ?? '';
    t.equal(decodeJwt(token2).sub, 'alice');
    t.same(decodeJwt(token2).access, [repo('team/other', 'pull', 'push')]);
    t.ok(await s.auth.authorizer.authorize(bearer(token2), [repo('team/other', 'pull', 'push')]));

    const forged = await post({ grant_type: 'refresh_token', refresh_token: `${refresh.slice(0, -4)}AAAA`, service: 'registry.test' });
    t.equal(forged.status, 401);
    const accessAsRefresh = await post({ grant_type: 'refresh_token', refresh_token: token2, service: 'registry.test' });
    t.equal(accessAsRefresh.status, 401, 'an access token is not a refresh token');

    const wrong = await post({ grant_type: 'password', username: 'alice', password: 'bad', service: 'registry.test' });
    t.equal(wrong.status, 401);
    t.equal(((await wrong.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAUTHORIZED');
    const unsupportedGrant = await post({ grant_type: 'client_credentials' });
    t.equal(unsupportedGrant.status, 400);
    t.equal(
      ((await unsupportedGrant.json()) as { errors: Array<{ code: string }> }).errors[0]?.code,
      'BAD_REQUEST',
      'a bad request, not UNSUPPORTED',
    );
    // A body fastify itself refuses goes through the same error handler as the /v2/ API.
    const badJson = await fetch(`${s.url}/auth/token`, { method: 'POST', body: '{', headers: { 'content-type': 'application/json' } });
    t.equal(badJson.status, 400, 'an unparsable body is a 400');
    t.equal(((await badJson.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'BAD_REQUEST', 'and not UNSUPPORTED');

    await userAdd(join(dir, 'htpasswd'), 'alice', 'alice-new-pw');
    const revoked = await post({ grant_type: 'refresh_token', refresh_token: refresh, service: 'registry.test' });
    t.equal(revoked.status, 401, 'a password change revokes refresh tokens');
    await userAdd(join(dir, 'htpasswd'), 'alice', 'alice-pw');

    const getOffline = await tokenAccess(await getToken(s, [], basic('bob', 'bob-pw'), '&offline_token=true&client_id=docker'));
    t.type(getOffline.body.refresh_token, 'string', 'GET with offline_token=true');
  });

  t.test('rules file change is picked up without restart', async (t) => {
    const before = await tokenAccess(await getToken(s, ['repository:public/base:pull', 'repository:docs/site:pull']));
    t.same(before.access, [repo('public/base', 'pull')]);
    const original = await readFile(rulesFile, 'utf8');
    const tmp = `${rulesFile}.new`;
    await writeFile(tmp, original.replace('repository: "public/*"', 'repository: "docs/**"'));
    await rename(tmp, rulesFile);
    const after = await tokenAccess(await getToken(s, ['repository:public/base:pull', 'repository:docs/site:pull']));
    t.same(after.access, [repo('docs/site', 'pull')]);

    await writeFile(tmp, 'rules: [ { who: anonymous, repository: "**", actions: [fly] } ]\n');
    await rename(tmp, rulesFile);
    const invalid = await tokenAccess(await getToken(s, ['repository:public/base:pull', 'repository:docs/site:pull']));
    t.same(invalid.access, [repo('docs/site', 'pull')], 'an invalid file keeps the previous rules');
    await writeFile(rulesFile, original);
  });
});

t.test('failed logins are rate-limited per client address', async (t) => {
  const dir = await tempDir(t, 'berth-token-');
  await userAdd(join(dir, 'htpasswd'), 'alice', 'alice-pw');
  const s = await start(t, { service: 'registry.test' }, { ratelimit: { failures: 3, window: '1m' } }, dir);
  for (let i = 0; i < 3; i++) t.equal((await getToken(s, [], basic('alice', `guess-${i}`))).status, 401);
  const blocked = await getToken(s, [], basic('alice', 'alice-pw'));
  t.equal(blocked.status, 429, 'even the right password is refused while blocked');
  t.equal(((await blocked.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'TOOMANYREQUESTS');
  t.match(blocked.headers.get('retry-after') ?? '', /^\d+$/);
  t.equal((await getToken(s, ['repository:x/y:pull'])).status, 200, 'anonymous requests are not logins');
});

t.test('no good login clears the failures; parallel wrong logins never pass the limit', async (t) => {
  const dir = await tempDir(t, 'berth-token-');
  await userAdd(join(dir, 'htpasswd'), 'alice', 'alice-pw');
  await userAdd(join(dir, 'htpasswd'), 'mallory', 'mallory-pw');
  const s = await start(t, { service: 'registry.test' }, { ratelimit: { failures: 10, window: '1m' } }, dir);
  const statuses: number[] = [];
  for (let i = 0; i < 45; i++) {
    statuses.push((await getToken(s, [], basic('alice', `guess-${i}`))).status);
    // The guesser's own account, logged in between guesses, used to clear the counter of the address.
    const own = (await getToken(s, [], basic('mallory', 'mallory-pw'))).status;
    if (i < 9 && own !== 200) t.fail(`mallory's login ${i}: ${own}`);
  }
  t.equal(statuses.filter((x) => x === 401).length, 10, '10 guesses were checked');
  t.equal(statuses.filter((x) => x === 429).length, 35, 'the rest were refused');

  const dir2 = await tempDir(t, 'berth-token-');
  await userAdd(join(dir2, 'htpasswd'), 'alice', 'alice-pw');
  const s2 = await start(t, { service: 'registry.test' }, { ratelimit: { failures: 10, window: '1m' } }, dir2);
  const parallel = await Promise.all(Array.from({ length: 100 }, (_, i) => getToken(s2, [], basic('alice', `p-${i}`)).then((r) => r.status)));
  t.equal(parallel.filter((x) => x === 401).length, 10, '100 parallel wrong logins: exactly 10 checked');
  t.equal(parallel.filter((x) => x === 429).length, 90);
});

t.test('default rules: authenticated users may do everything, anonymous nothing', async (t) => {
  const dir = await tempDir(t, 'berth-token-');
  await userAdd(join(dir, 'htpasswd'), 'alice', 'alice-pw');
  const s = await start(t, {}, { token: { service: 'registry.test', issuer: 'berth' } }, dir);
  t.same((await tokenAccess(await getToken(s, ['repository:a/b:pull']))).access, []);
  t.same((await tokenAccess(await getToken(s, ['repository:a/b:pull,push,delete'], basic('alice', 'alice-pw')))).access, [
    repo('a/b', 'pull', 'push', 'delete'),
  ]);
});

t.test('configuration errors name the key', async (t) => {
  const dir = await tempDir(t, 'berth-token-');
  const driver = new FilesystemDriver({ rootDirectory: dir });
  const make = (auth: RawSection) => createAuth(configFrom({ auth }), { driver, logger });
  await t.rejects(make({ htpasswd: { realm: 'x' } }), /auth\.htpasswd\.path: required/);
  await t.rejects(make({ token: { service: 's', issuer: 'i', rootcertbundle: '/x' } }), /auth\.token\.realm: required/);
  await t.rejects(make({ token: { realm: 'http://x/t', service: 's', issuer: 'i' } }), /auth\.token\.rootcertbundle: required/);
  await t.rejects(
    make({ token: { realm: 'http://x/t', service: 's', issuer: 'i', rootcertbundle: join(dir, 'missing.pem') } }),
    /auth\.token\.rootcertbundle: cannot load/,
  );
  await t.rejects(
    make({ token: { realm: 'http://x/t', service: 's', issuer: 'i', rootcertbundle: '/x', signingalgorithms: ['HS256'] } }),
    /auth\.token\.signingalgorithms: "HS256" is not allowed/,
  );
  await t.rejects(
    make({ builtin: { rules: [{ who: 'anonymous', repository: '**', actions: ['fly'] }] } }),
    /auth\.builtin\.rules\[0\]\.actions: unknown action "fly"/,
  );
  await t.rejects(
    make({ builtin: { rules: [{ who: 'anonymous', actions: ['pull'] }] } }),
    /auth\.builtin\.rules\[0\]: needs exactly one of repository or registry/,
  );
  await t.rejects(make({ builtin: { expiration: '10s' } }), /auth\.builtin\.expiration: at least 60s/);
  await t.rejects(make({ builtin: { rules: join(dir, 'no-rules.yaml') } }), /auth\.builtin\.rules: cannot read/);
  await t.rejects(
    make({ htpasswd: { path: '/x' }, token: { realm: 'http://x/t', service: 's', issuer: 'i', rootcertbundle: '/x' } }),
    /auth: configure one of htpasswd or token/,
  );

  const none = await createAuth(configFrom({}), { driver, logger });
  t.equal(none.authorizer.name, 'none');
  t.equal(none.tokenServer, undefined);
  const htpasswd = await createAuth(configFrom({ auth: { htpasswd: { realm: 'r', path: join(dir, 'h') } } }), { driver, logger });
  t.equal(htpasswd.authorizer.name, 'htpasswd');
  t.equal(htpasswd.tokenServer, undefined);
});

t.test('configured RSA signing key (RS256) and certificate', async (t) => {
  const dir = await tempDir(t, 'berth-token-');
  await userAdd(join(dir, 'htpasswd'), 'alice', 'alice-pw');
  const { generateKeyPairSync } = await import('node:crypto');
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyFile = join(dir, 'key.pem');
  await writeFile(keyFile, rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }), { mode: 0o600 });
  const s = await start(t, { key: keyFile, service: 'registry.test' }, {}, dir);
  const { token } = await tokenAccess(await getToken(s, ['repository:a/b:pull'], basic('alice', 'alice-pw')));
  t.equal(decodeProtectedHeader(token).alg, 'RS256');
  t.ok(await s.auth.authorizer.authorize(bearer(token), [repo('a/b', 'pull')]), 'the registry accepts RS256 tokens from its own server');
  t.notOk(existsSync(join(s.root, 'berth', 'token-key.pem')), 'no key generated when one is configured');
  const cert = new X509Certificate(await (await fetch(`${s.url}/auth/cert.pem`)).text());
  t.ok(
    cert.publicKey.export({ type: 'spki', format: 'der' }).equals(rsa.publicKey.export({ type: 'spki', format: 'der' })),
    'certificate for the configured key',
  );

  const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const certFile = join(dir, 'wrong-cert.pem');
  await writeFile(certFile, selfSignedCertificate(other.privateKey, other.publicKey, { commonName: 'x' }));
  const driver = new FilesystemDriver({ rootDirectory: join(dir, 'storage') });
  await t.rejects(
    createAuth(configFrom({ auth: { builtin: { key: keyFile, certificate: certFile } } }), { driver, logger }),
    /auth\.builtin\.certificate: does not match auth\.builtin\.key/,
  );
  await writeFile(certFile, 'not a key');
  await t.rejects(createAuth(configFrom({ auth: { builtin: { key: certFile } } }), { driver, logger }), /auth\.builtin\.key: cannot load/);
});
