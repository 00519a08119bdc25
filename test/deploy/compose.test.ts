import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { Ajv, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { parse as parseYaml } from 'yaml';
import { applyEnvOverrides, normalizeConfig, parseConfigText } from '../../src/config/config.js';
import { parseAuthSettings } from '../../src/auth/settings.js';
import { parseProxySettings } from '../../src/proxy/config.js';
import { isMap, repoRoot } from './kustomize.js';

const root = repoRoot(fileURLToPath(new URL('.', import.meta.url)));
const composeDir = join(root, 'deploy', 'compose');
const composeFiles = readdirSync(composeDir)
  .filter((f) => /docker-compose\.ya?ml$/.test(f))
  .sort();
const run = promisify(execFile);

/** The Compose specification's schema (test/fixtures/compose-spec.json, see the README there). */
function composeValidator() {
  const schema = JSON.parse(readFileSync(join(root, 'test', 'fixtures', 'compose-spec.json'), 'utf8')) as Record<string, unknown>;
  // The schema names its meta-schema by a URL ajv does not resolve offline; ajv's default is that same draft-07.
  delete schema.$schema;
  // strict: false because the schema uses annotation keywords outside draft-07 (e.g. `deprecated`).
  const ajv = new Ajv({ allErrors: true, strict: false });
  const addFormats = addFormatsModule as unknown as (a: Ajv) => Ajv;
  addFormats(ajv);
  return ajv.compile(schema);
}

function describe(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`).join('; ');
}

type Service = Record<string, unknown> & {
  volumes?: unknown[];
  environment?: Record<string, unknown>;
  depends_on?: Record<string, { condition?: string }>;
};

function services(file: string): Record<string, Service> {
  const doc = parseYaml(readFileSync(join(composeDir, file), 'utf8')) as { services: Record<string, Service> };
  return doc.services;
}

/** The config file a service mounts at /etc/berth/config.yml, loaded by berth with the service's REGISTRY_* env. */
function mountedBerthConfig(file: string, service: Service) {
  const mount = (service.volumes ?? []).find((v): v is string => typeof v === 'string' && v.split(':')[1] === '/etc/berth/config.yml');
  if (!mount) throw new Error(`${file}: no config mounted at /etc/berth/config.yml`);
  const local = resolve(composeDir, mount.split(':')[0] as string);
  const warnings: string[] = [];
  const raw = parseConfigText(readFileSync(local, 'utf8'), local);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(service.environment ?? {})) env[k] = String(v);
  applyEnvOverrides(raw, env, (m) => warnings.push(m));
  const config = normalizeConfig(raw, warnings);
  if (config.auth) parseAuthSettings(config.auth, (m) => warnings.push(m));
  const proxy = config.proxy ? parseProxySettings(config.proxy, (m) => warnings.push(m)) : null;
  return { config, proxy, warnings };
}

t.test('there is a compose file for berth + Redis + S3 and one for a Docker Hub mirror', async (t) => {
  t.same(composeFiles, ['docker-compose.yml', 'mirror.docker-compose.yml']);
});

t.test('the compose files follow the Compose specification', async (t) => {
  const validate = composeValidator();
  t.notOk(validate({ services: { berth: { image: 'berth', restart: 'sometimes', bogus: 1 } } }), 'the schema rejects a broken file');
  t.match(describe(validate.errors), /bogus/);
  for (const file of composeFiles) {
    const doc: unknown = parseYaml(readFileSync(join(composeDir, file), 'utf8'));
    t.ok(validate(doc), `${file}: ${describe(validate.errors)}`);
  }
});

t.test('docker-compose.yml: berth on MinIO and Redis, bucket created first', async (t) => {
  const s = services('docker-compose.yml');
  t.same(Object.keys(s).sort(), ['berth', 'createbucket', 'minio', 'redis']);
  const berth = s.berth as Service;
  t.equal(berth.read_only, true, 'read-only root filesystem');
  t.same(berth.tmpfs, ['/tmp']);
  t.equal(berth.depends_on?.createbucket?.condition, 'service_completed_successfully', 'starts after the bucket exists');
  t.equal(berth.depends_on?.redis?.condition, 'service_healthy');
  t.equal(s.createbucket?.restart, 'no', 'the bucket job runs once');

  const { config, warnings } = mountedBerthConfig('docker-compose.yml', berth);
  t.same(warnings, [], 'berth loads the mounted config and the REGISTRY_* env without warnings');
  t.equal(config.storage.driver, 's3');
  const s3 = config.storage.s3;
  if (!s3) throw new Error('storage.s3 missing');
  t.equal(s3.endpoint, 'http://minio:9000', 'the S3 endpoint is the minio service');
  t.equal(s3.forcePathStyle, true);
  t.same(
    s3.credentials,
    { accessKeyId: s.minio?.environment?.MINIO_ROOT_USER, secretAccessKey: s.minio?.environment?.MINIO_ROOT_PASSWORD },
    'berth uses the MinIO credentials',
  );
  const mc = JSON.stringify(s.createbucket?.command);
  t.match(mc, new RegExp(`local/${s3.bucket}\\b`), 'the one-shot job creates the bucket berth uses');
  t.equal(config.redis?.addr, 'redis:6379', 'Redis is the redis service');
});

t.test('mirror.docker-compose.yml: a pull-through cache of Docker Hub on the data volume', async (t) => {
  const s = services('mirror.docker-compose.yml');
  const mirror = s.mirror as Service;
  t.ok(mirror, 'a mirror service');
  t.equal(mirror.read_only, true);
  t.ok(
    (mirror.volumes ?? []).some((v) => typeof v === 'string' && v.endsWith(':/var/lib/registry')),
    'cache on a volume',
  );
  const { config, proxy, warnings } = mountedBerthConfig('mirror.docker-compose.yml', mirror);
  t.same(warnings, []);
  t.equal(config.storage.filesystem.rootDirectory, '/var/lib/registry');
  t.equal(proxy?.defaultUpstream?.url, 'https://registry-1.docker.io');
  t.ok(isMap(config.proxy) && config.proxy.remoteurl === 'https://registry-1.docker.io', "registry:2's proxy.remoteurl form");
});

t.test('every image is pinned to a version', async (t) => {
  for (const file of composeFiles) {
    for (const [name, service] of Object.entries(services(file))) {
      const image = String(service.image ?? '');
      t.match(image, /^[^:@\s]+(:[^:\s]+|@sha256:[0-9a-f]{64})$/, `${file} ${name}: ${image} names a tag or digest`);
      t.notMatch(image, /:(latest|stable|main|\d+(-[a-z]+)?)$/, `${file} ${name}: ${image} is a version, not a moving tag`);
    }
  }
});

t.test('docker-compose.yml: blobs are streamed, not redirected to an endpoint only the compose network resolves', async (t) => {
  const { config } = mountedBerthConfig('docker-compose.yml', services('docker-compose.yml').berth as Service);
  const endpoint = new URL(config.storage.s3?.endpoint ?? 'https://s3.amazonaws.com');
  t.notOk(endpoint.hostname.includes('.'), `${endpoint.hostname} is a compose service name`);
  t.equal(config.storage.redirectDisabled, true);
});

const compose129 = await run('docker-compose', ['version', '--short'], { timeout: 20_000 }).then(
  (r) => r.stdout.trim(),
  () => null,
);

t.test(
  "Debian's docker-compose 1.29 accepts both files",
  { skip: compose129 ? false : 'docker-compose is not installed (apt-get install docker-compose)' },
  async (t) => {
    for (const file of composeFiles) {
      const { stdout } = await run('docker-compose', ['-f', file, 'config'], { cwd: composeDir, timeout: 60_000 });
      const resolved = parseYaml(stdout) as { services: Record<string, { image?: string }> };
      t.same(
        Object.keys(resolved.services).sort(),
        Object.keys(services(file)).sort(),
        `${file}: docker-compose ${compose129} resolves every service`,
      );
    }
    // What 1.29 rejects and the Compose specification allows: a top-level name.
    const dir = mkdtempSync(join(tmpdir(), 'berth-compose-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'docker-compose.yml'), 'name: berth\nservices:\n  a:\n    image: redis:7.4.2-bookworm\n');
    const broken = await run('docker-compose', ['config'], { cwd: dir, timeout: 60_000 }).catch((err: unknown) => err);
    t.match(String(broken), /'name' does not match/, 'the check can fail: 1.29 rejects a top-level name');
  },
);
