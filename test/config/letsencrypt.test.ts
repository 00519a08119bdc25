import t from 'tap';
import { configFrom } from '../../src/config/config.js';
import { LETSENCRYPT_DIRECTORY } from '../../src/config/letsencrypt.js';

// http.tls.letsencrypt: Distribution's key names; mistakes stop startup with the key named.

const ok = configFrom({ http: { tls: { letsencrypt: { cachefile: '/c.json', hosts: ['Registry.Example.com'], email: 'a@b.c' } } } });
t.same(ok.http.tls?.letsencrypt, { cacheFile: '/c.json', hosts: ['registry.example.com'], email: 'a@b.c', directoryUrl: LETSENCRYPT_DIRECTORY });
t.same(ok.warnings, [], 'no warning for a valid section (it used to be "accepted but not used")');

const rows: [string, Record<string, unknown>, RegExp][] = [
  ['no cachefile', { hosts: ['a.example'] }, /http\.tls\.letsencrypt\.cachefile: required/],
  ['no hosts', { cachefile: '/c' }, /http\.tls\.letsencrypt\.hosts: list/],
  ['a host that is not a name', { cachefile: '/c', hosts: ['a b'] }, /http\.tls\.letsencrypt\.hosts: "a b"/],
  [
    'plain http directory',
    { cachefile: '/c', hosts: ['a.example'], directoryurl: 'http://ca.example/dir' },
    /directoryurl: an ACME directory is an https URL/,
  ],
  ['not a URL', { cachefile: '/c', hosts: ['a.example'], directoryurl: 'nope' }, /directoryurl: not a URL/],
];
for (const [name, section, error] of rows) {
  t.throws(() => configFrom({ http: { tls: { letsencrypt: section } } }), error, name);
}
t.throws(
  () => configFrom({ http: { tls: { certificate: '/c', key: '/k', letsencrypt: { cachefile: '/c', hosts: ['a.example'] } } } }),
  /either certificate\/key or letsencrypt/,
  'files and ACME together are refused',
);
t.throws(
  () => configFrom({ http: { tls: { letsencrypt: { cachefile: '/c', hosts: ['a.example'], hots: 1 } } } }),
  /http\.tls\.letsencrypt\.hots: unknown key \(did you mean "hosts"\?\)/,
  'a misspelt key under http.tls stops loading, naming it',
);
