import t from 'tap';
import { configFrom } from '../../src/config/config.js';
import { createPullThrough, parseProxySettings } from '../../src/proxy/index.js';
import { Router } from '../../src/proxy/routing.js';
import { parseChallenge } from '../../src/proxy/upstream.js';
import type { RawSection } from '../../src/config/fields.js';
import { pino } from 'pino';
import { FilesystemDriver } from '../../src/storage/drivers/filesystem.js';
import { RegistryStore } from '../../src/storage/registry-store.js';
import { tempDir } from '../helpers/ports.js';

const parse = (raw: RawSection) => {
  const warnings: string[] = [];
  const settings = parseProxySettings(raw, (m) => warnings.push(m));
  return { settings, warnings };
};

t.test("Distribution's proxy section works as is", async (t) => {
  const { settings } = parse({ remoteurl: 'https://registry-1.docker.io', username: 'u', password: 'p', ttl: '72h' });
  const u = settings?.upstreams[0];
  t.equal(settings?.upstreams.length, 1);
  t.match(u, {
    name: 'docker.io',
    url: 'https://registry-1.docker.io',
    username: 'u',
    password: 'p',
    ttlMs: 72 * 3_600_000,
    isDefault: true,
    dockerHub: true,
  });
  t.same(u?.repositories, ['**'], 'mirrors every name, as Distribution does');
  t.equal(settings?.defaultUpstream, u);
  const other = parse({ remoteurl: 'https://quay.io/' }).settings?.upstreams[0];
  t.match(other, { name: 'quay.io', url: 'https://quay.io', isDefault: true, dockerHub: false, ttlMs: 168 * 3_600_000 });
  t.equal(parse({ remoteurl: 'http://127.0.0.1:5001', ttl: 0 }).settings?.upstreams[0]?.ttlMs, 0, 'ttl 0 keeps content forever');
});

t.test("berth's upstream list", async (t) => {
  const { settings, warnings } = parse({
    upstreams: [
      { name: 'ghcr.io', url: 'https://ghcr.io', repositories: ['org/*'], tagttl: '30s' },
      { name: 'docker.io', url: 'https://registry-1.docker.io', repositories: ['library/**'] },
      { name: 'localhost:5000', url: 'http://localhost:5000', color: 'blue' },
    ],
  });
  t.equal(settings?.defaultUpstream?.name, 'docker.io', 'docker.io is the default unless another says default: true');
  t.match(settings?.upstreams[0], { name: 'ghcr.io', prefix: 'ghcr.io', tagTtlMs: 30_000, isDefault: false });
  t.equal(settings?.upstreams[2]?.prefix, 'localhost-5000', 'a port becomes a valid name component');
  t.match(warnings, [/proxy\.upstreams\[2\]\.color: unknown/]);
  const explicit = parse({
    upstreams: [
      { name: 'docker.io', url: 'https://registry-1.docker.io' },
      { name: 'quay.io', url: 'https://quay.io', default: true },
    ],
  });
  t.equal(explicit.settings?.defaultUpstream?.name, 'quay.io');
  const none = parse({
    upstreams: [
      { name: 'ghcr.io', url: 'https://ghcr.io' },
      { name: 'quay.io', url: 'https://quay.io' },
    ],
  });
  t.equal(none.settings?.defaultUpstream, undefined, 'no default among several non-docker.io upstreams: ns or prefix only');
  t.equal(parse({}).settings, null, 'no upstream, no cache');
});

t.test('errors name the key', async (t) => {
  t.throws(() => parse({ upstreams: [{ url: 'https://ghcr.io' }] }), /proxy\.upstreams\[0\]\.name: required/);
  t.throws(() => parse({ upstreams: [{ name: 'ghcr.io', url: 'ftp://ghcr.io' }] }), /proxy\.upstreams\[0\]\.url: expected an http\(s\) URL/);
  t.throws(() => parse({ remoteurl: 'https://user:pw@registry-1.docker.io' }), /proxy\.url: expected an http\(s\) URL without credentials/);
  t.throws(() => parse({ remoteurl: 'https://x.io', username: 'u' }), /proxy\.username: username and password go together/);
  t.throws(() => parse({ remoteurl: 'https://x.io', ttl: 'soon' }), /proxy\.ttl: expected a duration/);
  t.throws(() => parse({ upstreams: 'docker.io' }), /proxy\.upstreams: expected a list/);
  t.throws(
    () =>
      parse({
        upstreams: [
          { name: 'a.io', url: 'https://a.io', default: true },
          { name: 'b.io', url: 'https://b.io', default: true },
        ],
      }),
    /only one upstream can be the default/,
  );
  t.throws(
    () =>
      parse({
        upstreams: [
          { name: 'docker.io', url: 'https://a.io' },
          { name: 'docker.io', url: 'https://b.io' },
        ],
      }),
    /docker\.io is listed twice/,
  );
  t.throws(
    () => parse({ upstreams: [{ name: 'a.io', url: 'https://a.io', repositories: ['Bad Glob'] }] }),
    /repositories: "Bad Glob" is not a repository glob/,
  );
});

t.test('routing: which requests the cache answers and where it keeps them', async (t) => {
  const settings = parse({
    upstreams: [
      { name: 'docker.io', url: 'https://registry-1.docker.io', repositories: ['library/**', 'bitnami/**'] },
      { name: 'ghcr.io', url: 'https://ghcr.io' },
    ],
  }).settings;
  if (!settings) throw new Error('no settings');
  const router = new Router(settings);
  t.match(
    router.route('library/ubuntu', undefined),
    { kind: 'mirror', target: { upstream: { name: 'docker.io' }, remoteName: 'library/ubuntu', localName: 'library/ubuntu' } },
    'daemon shape',
  );
  t.notOk((router.route('library/ubuntu', undefined) as { target: { namespace?: string } }).target.namespace, 'nothing to echo');
  t.same(router.route('team/app', undefined), { kind: 'local' }, 'names no upstream serves are local (pushable)');
  t.match(
    router.route('ubuntu', undefined),
    { kind: 'mirror', target: { remoteName: 'library/ubuntu', localName: 'ubuntu' } },
    'globs match the upstream name',
  );
  t.match(
    router.route('library/ubuntu', 'docker.io'),
    { kind: 'mirror', target: { localName: 'library/ubuntu', namespace: 'docker.io' } },
    'containerd shape',
  );
  t.match(
    router.route('library/ubuntu', 'registry-1.docker.io'),
    { kind: 'mirror', target: { upstream: { name: 'docker.io' } } },
    'Docker Hub aliases',
  );
  t.match(router.route('org/app', 'ghcr.io'), {
    kind: 'mirror',
    target: { upstream: { name: 'ghcr.io' }, remoteName: 'org/app', localName: 'ghcr.io/org/app', namespace: 'ghcr.io' },
  });
  t.match(
    router.route('ghcr.io/org/app', undefined),
    { kind: 'mirror', target: { upstream: { name: 'ghcr.io' }, remoteName: 'org/app', localName: 'ghcr.io/org/app' } },
    'prefix shape',
  );
  t.match(router.route('team/app', 'docker.io'), { kind: 'unknown' }, 'ns names a registry whose repository this cache does not serve');
  t.match(router.route('library/ubuntu', 'quay.io'), { kind: 'unknown' }, 'an ns no upstream claims is never answered from another');
  const hub = parse({ remoteurl: 'https://registry-1.docker.io' }).settings;
  if (!hub) throw new Error('no settings');
  t.match(
    new Router(hub).route('ubuntu', undefined),
    { kind: 'mirror', target: { remoteName: 'library/ubuntu', localName: 'ubuntu' } },
    'official images without library/',
  );
});

t.test('WWW-Authenticate challenges', async (t) => {
  t.same(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/a:pull,push"'), {
    scheme: 'bearer',
    params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/a:pull,push' },
  });
  t.same(parseChallenge('Basic realm="basic-realm"'), { scheme: 'basic', params: { realm: 'basic-realm' } });
  t.same(parseChallenge('Bearer realm=unquoted, error="insufficient_scope"'), {
    scheme: 'bearer',
    params: { realm: 'unquoted', error: 'insufficient_scope' },
  });
  t.equal(parseChallenge(null), null);
});

t.test('createPullThrough: null without a proxy section', async (t) => {
  const logger = pino({ level: 'silent' });
  const driver = new FilesystemDriver({ rootDirectory: await tempDir(t, 'berth-proxy-config-') });
  const deps = { store: new RegistryStore(driver), driver, logger };
  t.equal(createPullThrough(configFrom({}), deps), null);
  const p = createPullThrough(configFrom({ proxy: { remoteurl: 'http://127.0.0.1:9' } }), deps);
  t.ok(p, 'a cache for a proxy section');
  await p?.close();
});
