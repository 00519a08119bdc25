import { execFile } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { allowedActions, grant, parseRulesDocument } from '../../src/auth/rules.js';
import { globToRegExp } from '../../src/oci/name-glob.js';
import { parseScopes } from '../../src/auth/token-server.js';
import { libtrustKeyId, selfSignedCertificate } from '../../src/auth/x509.js';
import { tempDir } from '../helpers/ports.js';

t.test('globs: * within a component, ** across', async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['public/*', 'public/app', true],
    ['public/*', 'public/a/b', false],
    ['public/*', 'public', false],
    ['public/**', 'public/a/b/c', true],
    ['**', 'anything/at/all', true],
    ['team-*/app', 'team-x/app', true],
    ['team-*/app', 'team-x/y/app', false],
    ['a.b/c', 'aXb/c', false],
    ['lib', 'lib', true],
    ['lib', 'library', false],
  ];
  for (const [glob, name, expected] of cases) t.equal(globToRegExp(glob).test(name), expected, `${glob} vs ${name}`);
});

t.test('rules: union of every matching rule', async (t) => {
  const set = parseRulesDocument(
    {
      groups: { devs: ['alice', 'bob'] },
      rules: [
        { who: 'anonymous', repository: 'public/**', actions: ['pull'] },
        { who: 'group:devs', repository: 'public/**', actions: ['push'] },
        { who: 'alice', repository: 'public/tools', actions: ['delete'] },
        { who: 'authenticated', repository: '${account}/*', actions: ['*'] },
        { who: ['carol', 'group:nobody'], registry: 'catalog', actions: ['*'] },
      ],
    },
    'rules',
  );
  const acts = (account: string | undefined, name: string) => [...allowedActions(set, account, 'repository', name)].sort();
  t.same(acts(undefined, 'public/tools'), ['pull']);
  t.same(acts('bob', 'public/tools'), ['pull', 'push']);
  t.same(acts('alice', 'public/tools'), ['delete', 'pull', 'push']);
  t.same(acts('carol', 'public/tools'), ['pull']);
  t.same(acts('carol', 'carol/app'), ['*']);
  t.same(acts('carol', 'alice/app'), []);
  t.same(acts(undefined, '${account}/app'), [], '${account} never matches anonymous');
  t.same([...allowedActions(set, 'carol', 'registry', 'catalog')], ['*']);
  t.same([...allowedActions(set, 'alice', 'registry', 'catalog')], []);

  t.same(
    grant(set, 'bob', [
      { type: 'repository', name: 'public/x', actions: ['pull', 'push', 'delete'] },
      { type: 'repository', name: 'private/x', actions: ['pull'] },
      { type: 'repository', name: 'bob/x', actions: ['pull', 'delete'] },
    ]),
    [
      { type: 'repository', name: 'public/x', actions: ['pull', 'push'] },
      { type: 'repository', name: 'bob/x', actions: ['pull', 'delete'] },
    ],
  );
  t.throws(
    () => parseRulesDocument({ rules: [{ who: 'x', repository: '**', actions: ['pull'], extra: 1 }] }, 'f.yaml'),
    /f\.yaml\.rules\[0\]\.extra: unknown key/,
  );
  t.throws(() => parseRulesDocument({ rules: [{ repository: '**', actions: ['pull'] }] }, 'f.yaml'), /f\.yaml\.rules\[0\]\.who/);
  t.throws(() => parseRulesDocument({ rules: [{ who: 'x', registry: 'other', actions: ['pull'] }] }, 'f.yaml'), /registry: only "catalog"/);
});

t.test('scope parsing', async (t) => {
  t.same(parseScopes(['repository:samalba/my-app:pull,push']), [{ type: 'repository', name: 'samalba/my-app', actions: ['pull', 'push'] }]);
  t.same(parseScopes(['repository:a/b:pull repository:a/b:push', 'registry:catalog:*']), [
    { type: 'repository', name: 'a/b', actions: ['pull', 'push'] },
    { type: 'registry', name: 'catalog', actions: ['*'] },
  ]);
  t.same(parseScopes(['repository(plugin):a/b:pull']), [{ type: 'repository', name: 'a/b', actions: ['pull'] }], 'resource class dropped');
  t.same(parseScopes(['repository:a/b:pull,fly']), [{ type: 'repository', name: 'a/b', actions: ['pull'] }], 'unknown action dropped');
  t.same(parseScopes(['repository:../etc:pull', 'repository:UPPER:pull', 'bogus', 'user:x:pull', 'registry:other:*']), [], 'invalid scopes ignored');
  t.same(parseScopes(['repository:127.0.0.1:5000/a:pull']).length, 0, 'host:port names are not repository names');
});

t.test('self-signed certificate is valid X.509 (openssl) and named by its libtrust key id', async (t) => {
  const dir = await tempDir(t, 'berth-x509-');
  for (const [type, opts] of [
    ['ec', { namedCurve: 'P-256' }],
    ['rsa', { modulusLength: 2048 }],
  ] as const) {
    const { privateKey, publicKey } =
      type === 'ec' ? generateKeyPairSync('ec', opts as { namedCurve: string }) : generateKeyPairSync('rsa', opts as { modulusLength: number });
    const pem = selfSignedCertificate(privateKey, publicKey, { commonName: 'berth test' });
    const file = join(dir, `${type}.pem`);
    await writeFile(file, pem);
    const { stdout } = await promisify(execFile)('openssl', ['verify', '-CAfile', file, file]);
    t.match(stdout, /: OK/, `${type}: openssl verifies the self-signed chain`);
    const cert = new X509Certificate(pem);
    t.ok(cert.ca, `${type}: CA:TRUE`);
    t.ok(cert.verify(publicKey));
    t.equal(cert.subject, 'CN=berth test');
    t.match(libtrustKeyId(publicKey), /^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/, 'libtrust format');
  }
});
