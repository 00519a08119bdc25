import t from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyEnvOverrides, loadConfig, normalizeConfig, parseListenAddress } from '../../src/config/config.js';

async function withFile(t: { teardown(fn: () => unknown): void }, text: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.yml');
  await writeFile(file, text);
  return file;
}

// The registry:2 default config shipped by Distribution (and Debian's docker-registry package), loaded as is.
const REGISTRY2_CONFIG = `version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`;

t.test('a registry:2 config file loads as is', async (t) => {
  const c = await loadConfig(await withFile(t, REGISTRY2_CONFIG), {});
  t.equal(c.storage.filesystem.rootDirectory, '/var/lib/registry');
  t.equal(c.storage.deleteEnabled, true);
  t.equal(c.http.addr, ':5000');
  t.same(c.http.headers, { 'X-Content-Type-Options': ['nosniff'] });
  t.same(c.log.fields, { service: 'registry' });
  t.ok(
    c.warnings.some((w) => w.startsWith('health:')),
    'ignored registry:2 options are reported',
  );
});

t.test('defaults without a file', async (t) => {
  const c = await loadConfig(undefined, {});
  t.equal(c.http.addr, ':5000');
  t.equal(c.storage.driver, 'filesystem');
  t.equal(c.storage.filesystem.rootDirectory, './data');
  t.equal(c.storage.filesystem.directWrites, true, 'blob data written around the page cache where the file system allows');
  t.equal(normalizeConfig({ storage: { filesystem: { directwrites: false } } }).storage.filesystem.directWrites, false);
  t.equal(c.storage.deleteEnabled, false);
  t.equal(c.storage.uploadPurging.ageMs, 168 * 3600_000);
  t.equal(c.redis, undefined);
  t.equal(c.auth, undefined);
});

t.test('REGISTRY_* environment variables override the file', async (t) => {
  const file = await withFile(t, REGISTRY2_CONFIG);
  const c = await loadConfig(file, {
    REGISTRY_HTTP_ADDR: '127.0.0.1:5055',
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: '/tmp/x',
    REGISTRY_STORAGE_DELETE_ENABLED: 'false',
    REGISTRY_REDIS_ADDR: '127.0.0.1:6390',
    REGISTRY_REDIS_DB: '3',
    REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE: '2h',
    REGISTRY_LOG_LEVEL: 'debug',
  });
  t.equal(c.http.addr, '127.0.0.1:5055');
  t.equal(c.storage.filesystem.rootDirectory, '/tmp/x');
  t.equal(c.storage.deleteEnabled, false);
  t.same(c.redis, { addr: '127.0.0.1:6390', db: 3, keyPrefix: 'berth:' });
  t.equal(c.storage.uploadPurging.ageMs, 2 * 3600_000);
  t.equal(c.log.level, 'debug');
});

t.test('unknown keys where they are harmless warn, they do not stop startup', async (t) => {
  const c = normalizeConfig({ http: { addr: ':5000', adr: 'typo' }, log: { colour: 'blue' }, berth: { gcc: {} } });
  t.same(c.warnings, [
    'http.adr: unknown configuration key, ignored',
    'log.colour: unknown configuration key, ignored',
    'berth.gcc: unknown configuration key, ignored',
  ]);
});

t.test('invalid values stop startup with a message naming the key', async (t) => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ storage: { delete: { enabled: 'maybe' } } }, /^storage\.delete\.enabled: expected a boolean/],
    [{ storage: { filesystem: { directwrites: 'sometimes' } } }, /^storage\.filesystem\.directwrites: expected a boolean/],
    [{ http: { addr: 'nonsense' } }, /^http\.addr: /],
    [{ log: { level: 'loud' } }, /^log\.level: /],
    [{ storage: { maintenance: { uploadpurging: { age: 'forever' } } } }, /^storage\.maintenance\.uploadpurging\.age: expected a duration/],
    [{ redis: { addr: 'x:1', db: -1 } }, /^redis\.db: /],
    [{ storage: { filesystem: { rootdirectory: '/a' }, s3: { bucket: 'b' } } }, /^storage: configure one driver/],
    [{ http: { host: 'registry.example.com' } }, /^http\.host: expected a base URL/],
  ];
  for (const [raw, re] of cases) t.throws(() => normalizeConfig(raw), re, JSON.stringify(raw));
  const file = await withFile(t, 'storage: [1, 2');
  await t.rejects(loadConfig(file, {}), /not valid YAML/);
  await t.rejects(loadConfig('/nonexistent/berth.yml', {}), /cannot read config file/);
});

t.test('env overrides create missing sections and parse YAML scalars', async (t) => {
  const raw: Record<string, unknown> = {};
  const warnings: string[] = [];
  applyEnvOverrides(raw, { REGISTRY_STORAGE_DELETE_ENABLED: 'true', REGISTRY_HTTP_HEADERS_X: '[a, b]', OTHER: '1' }, (w) => warnings.push(w));
  t.same(raw, { storage: { delete: { enabled: true } }, http: { headers: { x: ['a', 'b'] } } });
  t.same(warnings, []);
});

t.test('listen addresses and durations', async (t) => {
  t.same(parseListenAddress(':5000'), { host: '0.0.0.0', port: 5000 });
  t.same(parseListenAddress('127.0.0.1:5055'), { host: '127.0.0.1', port: 5055 });
  t.same(parseListenAddress('[::1]:80'), { host: '::1', port: 80 });
  t.throws(() => parseListenAddress('host:99999'));
});

t.test('config.example.yaml loads with no warnings and documents the defaults', async (t) => {
  const file = new URL('../../../config.example.yaml', import.meta.url).pathname;
  const c = await loadConfig(file, {});
  t.same(c.warnings, [], 'every key in the example is known');
  const defaults = await loadConfig(undefined, {});
  const { warnings: _a, berth: b1, raw: _r1, ...rest1 } = c;
  const { warnings: _b, berth: b2, raw: _r2, ...rest2 } = defaults;
  t.same(rest1, rest2, 'the example states the defaults');
  t.same({ ...b1, raw: undefined }, { ...b2, raw: undefined });
});
