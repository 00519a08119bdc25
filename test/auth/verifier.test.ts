import { createHmac, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { calculateJwkThumbprint, SignJWT, type JWK, type JWTPayload } from 'jose';
import { TrustStore } from '../../src/auth/trust.js';
import { InvalidTokenError, TokenVerifier } from '../../src/auth/verifier.js';
import { TokenAuthorizer } from '../../src/auth/token-authorizer.js';
import { libtrustKeyId, selfSignedCertificate } from '../../src/auth/x509.js';
import { SAFE_ALGORITHMS } from '../../src/auth/settings.js';
import { RegistryError } from '../../src/errors/registry-error.js';
import { tempDir } from '../helpers/ports.js';

interface Signer {
  privateKey: KeyObject;
  publicKey: KeyObject;
  certPem: string;
  certB64: string;
}

function makeSigner(type: 'ec' | 'rsa' = 'ec'): Signer {
  const { privateKey, publicKey } =
    type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const certPem = selfSignedCertificate(privateKey, publicKey, { commonName: 'test issuer' });
  const certB64 = certPem.replace(/-----[A-Z ]+-----|\s/g, '');
  return { privateKey, publicKey, certPem, certB64 };
}

const now = () => Math.floor(Date.now() / 1000);

function claims(over: JWTPayload = {}): JWTPayload {
  return {
    iss: 'test-issuer',
    sub: 'alice',
    aud: 'registry.test',
    exp: now() + 300,
    nbf: now() - 5,
    iat: now(),
    access: [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }],
    ...over,
  };
}

async function sign(s: Signer, payload: JWTPayload, header: Record<string, unknown> = {}, alg = 'ES256'): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg, typ: 'JWT', kid: libtrustKeyId(s.publicKey), ...header }).sign(s.privateKey);
}

const b64url = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

t.test('token verifier', async (t) => {
  const dir = await tempDir(t, 'berth-verifier-');
  const issuer = makeSigner();
  const rsaIssuer = makeSigner('rsa');
  const attacker = makeSigner();
  const bundle = join(dir, 'bundle.pem');
  await writeFile(bundle, issuer.certPem + rsaIssuer.certPem);
  const trust = await TrustStore.create({ rootCertBundle: bundle });
  const verifier = new TokenVerifier(trust, { issuers: ['test-issuer'], audience: 'registry.test', algorithms: [...SAFE_ALGORITHMS] });

  const refused = async (token: string, why: string) => {
    await t.rejects(verifier.verify(token), InvalidTokenError, why);
  };

  t.test('accepts good tokens', async (t) => {
    const byKid = await verifier.verify(await sign(issuer, claims()));
    t.equal(byKid.subject, 'alice');
    t.same(byKid.access, [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }]);

    const byX5c = await verifier.verify(await sign(issuer, claims(), { kid: undefined, x5c: [issuer.certB64] }));
    t.equal(byX5c.subject, 'alice', 'x5c naming a bundle certificate');

    const thumb = await calculateJwkThumbprint(issuer.publicKey.export({ format: 'jwk' }) as JWK);
    t.equal((await verifier.verify(await sign(issuer, claims(), { kid: thumb }))).subject, 'alice', 'kid = RFC 7638 thumbprint');

    t.equal((await verifier.verify(await sign(issuer, claims(), { kid: undefined }))).subject, 'alice', 'no kid: trusted keys tried');
    t.equal((await verifier.verify(await sign(rsaIssuer, claims(), {}, 'RS256'))).subject, 'alice', 'RS256');
    t.equal((await verifier.verify(await sign(issuer, claims({ aud: ['other', 'registry.test'] })))).subject, 'alice', 'aud list');
    // Leeway: expired 10 s ago is still inside the 30 s leeway.
    t.equal((await verifier.verify(await sign(issuer, claims({ exp: now() - 10 })))).subject, 'alice', 'exp within leeway');
  });

  t.test('refuses forged tokens', async () => {
    await refused(await sign(attacker, claims(), { kid: libtrustKeyId(issuer.publicKey) }), 'wrong key claiming the trusted kid');
    await refused(await sign(attacker, claims()), 'wrong key with its own kid');
    await refused(await sign(attacker, claims(), { kid: undefined }), 'wrong key without kid');
    await refused(await sign(attacker, claims(), { kid: undefined, x5c: [attacker.certB64] }), 'x5c with an untrusted self-signed cert');
    await refused(await sign(attacker, claims(), { kid: undefined, x5c: [issuer.certB64] }), 'x5c of the trusted cert, signed by another key');

    const none = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims())}.`;
    await refused(none, 'alg none, empty signature');
    await refused(`${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims())}.AAAA`, 'alg none with junk signature');

    // The classic confusion: HMAC keyed with the (public) verification key.
    for (const secret of [issuer.publicKey.export({ type: 'spki', format: 'pem' }), issuer.certPem]) {
      const input = `${b64url({ alg: 'HS256', typ: 'JWT', kid: libtrustKeyId(issuer.publicKey) })}.${b64url(claims())}`;
      const mac = createHmac('sha256', secret).update(input).digest('base64url');
      await refused(`${input}.${mac}`, 'HS256 signed with the public key');
    }

    await refused(await sign(issuer, claims({ exp: now() - 120 })), 'expired');
    await refused(await sign(issuer, claims({ exp: undefined })), 'no exp');
    await refused(await sign(issuer, claims({ nbf: now() + 120 })), 'not yet valid');
    await refused(await sign(issuer, claims({ aud: 'other.registry' })), 'wrong audience');
    await refused(await sign(issuer, claims({ iss: 'evil' })), 'wrong issuer');
    await refused(await sign(issuer, claims({ access: 'everything' })), 'malformed access claim');

    const good = await sign(issuer, claims());
    const [h, p, s] = good.split('.');
    await refused(`${h}.${b64url(claims({ access: [{ type: 'repository', name: '**', actions: ['*'] }] }))}.${s}`, 'payload swapped');
    await refused(`${h}.${p}`, 'two parts');
  });

  t.test('algorithm allow-list is explicit', async (t) => {
    const esOnly = new TokenVerifier(trust, { issuers: ['test-issuer'], audience: 'registry.test', algorithms: ['ES256'] });
    await t.rejects(esOnly.verify(await sign(rsaIssuer, claims(), {}, 'RS256')), InvalidTokenError);
    t.ok(await esOnly.verify(await sign(issuer, claims())));
  });

  t.test('authorizer challenges, scopes and insufficient_scope', async (t) => {
    const authz = new TokenAuthorizer(verifier, () => 'https://auth.test/token', 'registry.test');
    const req = (token?: string) => ({ method: 'GET', ip: '127.0.0.1', headers: token ? { authorization: `Bearer ${token}` } : {} });
    const pull = [{ type: 'repository' as const, name: 'team/app', actions: ['pull' as const] }];
    const push = [{ type: 'repository' as const, name: 'team/app', actions: ['pull' as const, 'push' as const] }];
    const other = [{ type: 'repository' as const, name: 'team/other', actions: ['pull' as const] }];

    const err = await authz.authorize(req(), push).catch((e: unknown) => e);
    t.type(err, RegistryError);
    t.equal((err as RegistryError).kind, 'UNAUTHORIZED');
    t.equal(
      (err as RegistryError).headers['WWW-Authenticate'],
      'Bearer realm="https://auth.test/token",service="registry.test",scope="repository:team/app:pull,push"',
    );

    const pullOnly = await sign(issuer, claims({ access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }] }));
    t.same(await authz.authorize(req(pullOnly), pull), { account: 'alice', granted: [{ type: 'repository', name: 'team/app', actions: ['pull'] }] });
    const insufficient = (await authz.authorize(req(pullOnly), push).catch((e: unknown) => e)) as RegistryError;
    t.equal(insufficient.kind, 'UNAUTHORIZED');
    t.equal(
      insufficient.headers['WWW-Authenticate'],
      'Bearer realm="https://auth.test/token",service="registry.test",scope="repository:team/app:pull,push",error="insufficient_scope"',
    );
    const otherRepo = (await authz.authorize(req(pullOnly), other).catch((e: unknown) => e)) as RegistryError;
    t.match(otherRepo.headers['WWW-Authenticate'], /error="insufficient_scope"/, 'scope for another repository');

    const expired = (await authz.authorize(req(await sign(issuer, claims({ exp: now() - 600 }))), pull).catch((e: unknown) => e)) as RegistryError;
    t.match(expired.headers['WWW-Authenticate'], /error="invalid_token"/);

    t.same(
      await authz.authorize(req(await sign(issuer, claims({ access: [] }))), []),
      { account: 'alice', granted: [] },
      'base route: any valid token',
    );
    const catalog = [{ type: 'registry' as const, name: 'catalog', actions: ['*' as const] }];
    await t.rejects(authz.authorize(req(pullOnly), catalog), RegistryError);
    const star = await sign(issuer, claims({ access: [{ type: 'registry', name: 'catalog', actions: ['*'] }] }));
    t.ok(await authz.authorize(req(star), catalog));
  });

  t.test('JWKS from a URL', async (t) => {
    const jwksKey = makeSigner();
    const jwk = { ...(jwksKey.publicKey.export({ format: 'jwk' }) as Record<string, unknown>), kid: 'jwks-key-1', use: 'sig' };
    let fetched = 0;
    const server = createServer((req, res) => {
      fetched++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [jwk, { kty: 'oct', k: 'c2VjcmV0', kid: 'hmac' }].slice(0, req.url === '/jwks' ? 1 : 2) }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    const remoteTrust = await TrustStore.create({ jwks: `http://127.0.0.1:${port}/jwks` });
    const v = new TokenVerifier(remoteTrust, { issuers: ['test-issuer'], audience: 'registry.test', algorithms: ['ES256'] });
    t.equal((await v.verify(await sign(jwksKey, claims(), { kid: 'jwks-key-1' }))).subject, 'alice');
    await t.rejects(v.verify(await sign(attacker, claims(), { kid: 'jwks-key-1' })), InvalidTokenError);
    t.ok(fetched >= 1);

    const mixed = await TrustStore.create({ jwks: `http://127.0.0.1:${port}/with-oct` });
    const v2 = new TokenVerifier(mixed, { issuers: ['test-issuer'], audience: 'registry.test', algorithms: ['ES256'] });
    // A JWKS carrying a symmetric key is refused as a whole (nothing is trusted from it).
    await t.rejects(v2.verify(await sign(jwksKey, claims(), { kid: 'jwks-key-1' })), InvalidTokenError);
  });

  t.test('JWKS file', async (t) => {
    const jwksKey = makeSigner();
    const file = join(dir, 'jwks.json');
    await writeFile(file, JSON.stringify({ keys: [{ ...(jwksKey.publicKey.export({ format: 'jwk' }) as object), kid: 'k1' }] }));
    const v = new TokenVerifier(await TrustStore.create({ jwks: file }), {
      issuers: ['test-issuer'],
      audience: 'registry.test',
      algorithms: ['ES256'],
    });
    t.equal((await v.verify(await sign(jwksKey, claims(), { kid: 'k1' }))).subject, 'alice');
    await t.rejects(v.verify(await sign(issuer, claims(), { kid: 'k1' })), InvalidTokenError, 'bundle key not trusted here');
  });
});
