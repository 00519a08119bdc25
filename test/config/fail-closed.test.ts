import t from 'tap';
import { applyEnvOverrides, loadConfig, normalizeConfig } from '../../src/config/config.js';
import { formatDuration, parseDuration } from '../../src/config/duration.js';
import { yamlBoolean } from '../../src/config/fields.js';
import { checkSchema } from '../../src/config/schema.js';

// Each row: a config mistake that would open access or move data, and the key the error must name.
const REFUSED: Array<[string, Record<string, unknown>, RegExp]> = [
  ['misspelt auth type (registry would be open)', { auth: { htpaswd: { path: '/x' } } }, /^auth\.htpaswd: unknown key \(did you mean "htpasswd"\?\)/],
  ['misspelt key inside an auth type', { auth: { htpasswd: { pth: '/x' } } }, /^auth\.htpasswd\.pth: unknown key/],
  ['registry:2 silly auth', { auth: { silly: { realm: 'x' } } }, /^auth\.silly: not supported/],
  [
    'misspelt top-level section (data in ./data)',
    { stroage: { filesystem: { rootdirectory: '/srv' } } },
    /^stroage: unknown key \(did you mean "storage"\?\)/,
  ],
  ['unknown top-level section', { frobnicate: {} }, /^frobnicate: unknown key/],
  ['misspelt storage key', { storage: { filesytem: { rootdirectory: '/srv' } } }, /^storage\.filesytem: unknown key/],
  ['misspelt filesystem key', { storage: { filesystem: { rootdir: '/srv' } } }, /^storage\.filesystem\.rootdir: unknown key/],
  ['misspelt s3 key', { storage: { s3: { bucket: 'b', region: 'r', acesskey: 'k' } } }, /^storage\.s3\.acesskey: unknown key/],
  ['storage driver berth lacks', { storage: { gcs: { bucket: 'b' } } }, /^storage\.gcs: not supported: berth has no such storage driver/],
  ['inmemory driver', { storage: { inmemory: {} } }, /^storage\.inmemory: not supported/],
  ['misspelt delete', { storage: { delete: { enable: true } } }, /^storage\.delete\.enable: unknown key/],
  [
    'misspelt http.tls key',
    { http: { tls: { certificate: 'c', key: 'k', clientca: ['x'] } } },
    /^http\.tls\.clientca: unknown key \(did you mean "clientcas"\?\)/,
  ],
  [
    'cipher suites',
    { http: { tls: { certificate: 'c', key: 'k', ciphersuites: ['TLS_AES_128_GCM_SHA256'] } } },
    /^http\.tls\.ciphersuites: not supported/,
  ],
  ['clientcas without a certificate', { http: { tls: { clientcas: ['/ca.pem'] } } }, /^http\.tls\.clientcas: needs http\.tls\.certificate/],
  ['bad minimumtls', { http: { tls: { certificate: 'c', key: 'k', minimumtls: 'ssl3' } } }, /^http\.tls\.minimumtls: expected one of/],
  ['proxy as a string', { proxy: 'https://registry-1.docker.io' }, /^proxy: expected a section/],
  ['misspelt proxy key', { proxy: { remoteur: 'https://registry-1.docker.io' } }, /^proxy\.remoteur: unknown key \(did you mean "remoteurl"\?\)/],
  [
    'misspelt upstream key',
    { proxy: { upstreams: [{ name: 'docker.io', url: 'https://x', passwort: 'p' }] } },
    /^proxy\.upstreams\[0\]\.passwort: unknown key/,
  ],
  ['misspelt redis key', { redis: { addr: 'r:6379', pasword: 'p' } }, /^redis\.pasword: unknown key/],
  ['redis without addr', { redis: { password: 'p' } }, /^redis\.addr: required/],
  ['redis tls', { redis: { addr: 'r:6379', tls: { enabled: true } } }, /^redis\.tls: not supported/],
  ['auth as a string', { auth: 'htpasswd' }, /^auth: expected a section/],
  ['storage as a string', { storage: 's3' }, /^storage: expected a section/],
  [
    'duration without a unit',
    { storage: { maintenance: { uploadpurging: { age: 168 } } } },
    /^storage\.maintenance\.uploadpurging\.age: 168 needs a unit, e\.g\. 168h/,
  ],
  ['duration without a unit (string)', { berth: { uploadsessionttl: '90' } }, /^berth\.uploadsessionttl: "90" needs a unit, e\.g\. 90h/],
  ['not a boolean', { storage: { delete: { enabled: 'maybe' } } }, /^storage\.delete\.enabled: expected a boolean/],
];

t.test('a config mistake that would open access or move data stops loading, naming the key', async (t) => {
  for (const [what, raw, re] of REFUSED) t.throws(() => normalizeConfig(raw), re, what);
});

// Each row: registry:2 options berth does not act on, which are harmless to drop: they load, with a warning.
const WARNED: Array<[Record<string, unknown>, string]> = [
  [{ storage: { cache: { blobdescriptor: 'inmemory' } } }, 'storage.cache'],
  [{ storage: { tag: { concurrencylimit: 8 } } }, 'storage.tag'],
  [{ health: { storagedriver: { enabled: true } } }, 'health'],
  [{ reporting: { bugsnag: {} } }, 'reporting'],
  [{ log: { hooks: [] } }, 'log.hooks'],
  [{ http: { http2: { disabled: false } } }, 'http.http2'],
  [{ redis: { addr: 'r:6379', pool: { maxidle: 16 } } }, 'redis.pool'],
  [{ storage: { s3: { bucket: 'b', region: 'r', loglevel: 'debug' } } }, 'storage.s3.loglevel'],
];

t.test('harmless registry:2 options load with one warning each', async (t) => {
  for (const [raw, key] of WARNED) {
    const c = normalizeConfig(raw);
    t.same(c.warnings, [`${key}: accepted for registry:2 compatibility but not used by berth`], key);
  }
});

t.test("an earlier berth's option that no longer does anything loads with a warning saying so", async (t) => {
  const c = normalizeConfig({ proxy: { remoteurl: 'http://127.0.0.1:1', spooldirectory: '/var/tmp' } });
  t.same(c.warnings, ['proxy.spooldirectory: no longer used by this version of berth; remove it']);
});

t.test('sections other parts of berth own are accepted', async (t) => {
  const c = normalizeConfig({
    notifications: { endpoints: [{ name: 'hook', url: 'http://127.0.0.1:1/', headers: { Authorization: ['Bearer x'] } }] },
    ui: { enabled: true },
    audit: { file: '/var/log/berth-audit.jsonl' },
    index: { anything: 1 },
    http: {
      debug: { addr: '127.0.0.1:5001', prometheus: { enabled: true, path: '/metrics' } },
      tls: { letsencrypt: { cachefile: '/x', email: 'a@b', hosts: ['h'], directoryurl: 'https://acme' } },
    },
  });
  t.same(c.warnings, []);
  t.same(c.raw.ui, { enabled: true }, 'their sections are in config.raw');
});

t.test('the schema: a section added in one line is checked', async (t) => {
  const schema = { '': { strict: true, keys: { extra: 'use' } }, extra: { strict: true, keys: { on: 'use' } } };
  t.same(checkSchema({ extra: { on: true } }, schema), []);
  t.throws(() => checkSchema({ extra: { off: true } }, schema), /^extra\.off: unknown key/);
});

// registry:2 reads YAML 1.1 booleans (gopkg.in/yaml.v2): every spelling below, nothing else.
const BOOLEANS: Array<[unknown, boolean | undefined]> = [
  [true, true],
  [false, false],
  ['true', true],
  ['True', true],
  ['TRUE', true],
  ['yes', true],
  ['Yes', true],
  ['YES', true],
  ['y', true],
  ['Y', true],
  ['on', true],
  ['On', true],
  ['ON', true],
  ['false', false],
  ['False', false],
  ['FALSE', false],
  ['no', false],
  ['No', false],
  ['NO', false],
  ['n', false],
  ['N', false],
  ['off', false],
  ['Off', false],
  ['OFF', false],
  ['tRUE', undefined],
  ['1', undefined],
  [1, undefined],
  ['0', undefined],
  ['enabled', undefined],
  ['', undefined],
];

t.test('booleans as registry:2 reads them', async (t) => {
  for (const [input, expected] of BOOLEANS) t.equal(yamlBoolean(input), expected, JSON.stringify(input));
  const c = await loadConfig(undefined, { REGISTRY_STORAGE_DELETE_ENABLED: 'yes', REGISTRY_STORAGE_REDIRECT_DISABLE: 'on' });
  t.equal(c.storage.deleteEnabled, true, 'yes from the environment');
  t.equal(c.storage.redirectDisabled, true, 'on from the environment');
  t.equal(normalizeConfig({ storage: { maintenance: { uploadpurging: { enabled: 'off' } } } }).storage.uploadPurging.enabled, false);
});

const DURATIONS: Array<[unknown, number | null]> = [
  ['168h', 168 * 3_600_000],
  ['1h30m', 5_400_000],
  ['90s', 90_000],
  ['500ms', 500],
  ['1.5h', 5_400_000],
  ['250us', 0.25],
  ['2d', 172_800_000],
  ['0', 0],
  [0, 0],
  ['0s', 0],
  ['90', null],
  [168, null],
  ['', null],
  ['10x', null],
  ['h', null],
  ['1h 30m', null],
  ['-1h', null],
  [true, null],
];

t.test('durations', async (t) => {
  for (const [input, ms] of DURATIONS) t.equal(parseDuration(input), ms, JSON.stringify(input));
  for (const ms of [0, 500, 90_000, 5_400_000, 86_400_000]) t.equal(parseDuration(formatDuration(ms)), ms, `round trip ${ms}`);
});

t.test('REGISTRY_STORAGE and REGISTRY_AUTH pick the type, as registry:2 env-only setups do', async (t) => {
  const raw: Record<string, unknown> = { storage: { filesystem: { rootdirectory: '/srv' }, delete: { enabled: true } } };
  applyEnvOverrides(
    raw,
    {
      REGISTRY_STORAGE: 's3',
      REGISTRY_STORAGE_S3_BUCKET: 'registry',
      REGISTRY_STORAGE_S3_REGION: 'eu-west-1',
      REGISTRY_STORAGE_S3_ACCESSKEY: 'AK',
      REGISTRY_STORAGE_S3_SECRETKEY: 'SK',
      REGISTRY_AUTH: 'htpasswd',
      REGISTRY_AUTH_HTPASSWD_REALM: 'Registry Realm',
      REGISTRY_AUTH_HTPASSWD_PATH: '/auth/htpasswd',
    },
    () => t.fail('no warning'),
  );
  const c = normalizeConfig(raw);
  t.equal(c.storage.driver, 's3', "the named driver replaces the file's");
  t.equal(c.storage.s3?.bucket, 'registry');
  t.same(c.storage.s3?.credentials, { accessKeyId: 'AK', secretAccessKey: 'SK' });
  t.equal(c.storage.deleteEnabled, true, 'the other storage keys stay');
  t.same(c.auth, { htpasswd: { realm: 'Registry Realm', path: '/auth/htpasswd' } });

  const token = await loadConfig(undefined, {
    REGISTRY_AUTH: 'token',
    REGISTRY_AUTH_TOKEN_REALM: 'https://auth.example.com/token',
    REGISTRY_AUTH_TOKEN_SERVICE: 'registry',
    REGISTRY_AUTH_TOKEN_ISSUER: 'issuer',
    REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE: '/certs/bundle.pem',
  });
  t.same(token.auth, {
    token: { realm: 'https://auth.example.com/token', service: 'registry', issuer: 'issuer', rootcertbundle: '/certs/bundle.pem' },
  });
  await t.rejects(loadConfig(undefined, { REGISTRY_STORAGE: 'gcs' }), /^storage\.gcs: not supported/);
  await t.rejects(loadConfig(undefined, { REGISTRY_AUTH: 'silly' }), /^auth\.silly: not supported/);
  await t.rejects(loadConfig(undefined, { REGISTRY_AUTH_HTPASWD_PATH: '/x' }), /^auth\.htpaswd: unknown key/, 'a typo in a variable is a typo');
});

t.test('variables that name no section are ignored with a warning (Kubernetes service links)', async (t) => {
  const c = await loadConfig(undefined, {
    REGISTRY_PORT: 'tcp://10.0.0.1:5000',
    REGISTRY_SERVICE_HOST: '10.0.0.1',
    REGISTRY_CONFIGURATION_PATH: '/x',
  });
  t.same(c.warnings, [
    'REGISTRY_PORT: no configuration section "port"; variable ignored',
    'REGISTRY_SERVICE_HOST: no configuration section "service"; variable ignored',
  ]);
});

t.test('S3 settings are parsed with the rest: their errors stop loading, their warnings are in the one list', async (t) => {
  t.throws(() => normalizeConfig({ storage: { s3: { region: 'r' } } }), /^storage\.s3\.bucket: required/);
  const c = normalizeConfig({ storage: { s3: { bucket: 'b', region: 'r', keyid: 'k', v4auth: false } } });
  t.same(c.warnings, [
    'storage.s3.keyid: ignored because storage.s3.encrypt is false',
    'storage.s3.v4auth: signature version 2 is not supported; berth signs with version 4',
  ]);
});

t.test('http.secret is accepted and not kept (berth keeps upload state on the server)', async (t) => {
  const c = normalizeConfig({ http: { secret: 's3cr3t' } });
  t.same(c.warnings, []);
  t.notMatch(JSON.stringify({ ...c, raw: undefined }), /s3cr3t/);
});
