import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';
import { parse as parseYaml } from 'yaml';
import { normalizeConfig, parseConfigText, type Config } from '../../src/config/config.js';
import { isSection } from '../../src/config/fields.js';
import { parseAuthSettings } from '../../src/auth/settings.js';
import { asObject, build, idOf, isMap, readYamlDocs, repoRoot, strategicMerge, type K8sObject } from './kustomize.js';
import { allowedDisruptions, policyViolations, schemaErrors } from './policy.js';

const root = repoRoot(fileURLToPath(new URL('.', import.meta.url)));
const k8sDir = join(root, 'deploy', 'kubernetes');
const clientsDir = join(root, 'deploy', 'clients');
const overlays = readdirSync(join(k8sDir, 'overlays')).sort();

/** Every .yaml/.yml file under `dir`. */
function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((f) => join(dir, f))
    .filter((f) => /\.ya?ml$/.test(f) && statSync(f).isFile())
    .sort();
}

/** Every directory under deploy/kubernetes holding a kustomization.yaml. */
function kustomizations(): string[] {
  return yamlFiles(k8sDir)
    .filter((f) => f.endsWith('/kustomization.yaml'))
    .map((f) => f.slice(0, -'/kustomization.yaml'.length));
}

/** Loads berth's config.yml from a ConfigMap the way the server does, collecting warnings (unknown keys). */
function berthConfig(text: string, source: string): { config: Config; warnings: string[] } {
  const warnings: string[] = [];
  const config = normalizeConfig(parseConfigText(text, source), warnings);
  if (config.auth) parseAuthSettings(config.auth, (m) => warnings.push(m));
  return { config, warnings };
}

function configMapConfig(objects: K8sObject[]): string {
  const cm = objects.find((o) => o.kind === 'ConfigMap' && /^berth-config-[a-z0-9]{10}$/.test(o.metadata.name));
  const text = isMap(cm?.data) ? cm.data['config.yml'] : undefined;
  if (typeof text !== 'string') throw new Error('berth-config has no config.yml');
  return text;
}

function berthDeployment(objects: K8sObject[]): Record<string, unknown> {
  const d = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === 'berth');
  if (!d) throw new Error('no berth Deployment');
  return d;
}

t.test('there is a base and the two overlays the issue asks for', async (t) => {
  t.same(overlays, ['s3-redis', 'single-node']);
  t.ok(kustomizations().includes(join(k8sDir, 'base')));
});

t.test('every YAML file is part of a kustomization or a complete, valid object', async (t) => {
  const used = new Set<string>();
  const patches = new Set<string>();
  const generated = new Set<string>();
  for (const dir of kustomizations()) {
    const b = build(dir, k8sDir);
    b.files.forEach((f) => used.add(f));
    b.patches.forEach((f) => patches.add(f));
    b.generatorFiles.forEach((f) => generated.add(f));
  }
  const files = [...yamlFiles(k8sDir), ...yamlFiles(clientsDir)];
  t.ok(files.length >= 10, `found ${files.length} YAML files`);
  for (const file of files) {
    const name = relative(root, file);
    if (file.endsWith('kustomization.yaml')) {
      t.ok(used.has(file), `${name} is reached from a kustomization`);
      continue;
    }
    if (generated.has(file)) {
      t.ok(
        berthConfig(readFileSync(file, 'utf8'), name).warnings.length === 0,
        `${name}: a berth config.yml (ConfigMap generator input) that loads without warnings`,
      );
      continue;
    }
    if (used.has(file) && !readYamlDocs(file).every((d) => isMap(d) && isMap(d.metadata) && 'apiVersion' in d && 'kind' in d)) {
      t.fail(`${name}: every document needs apiVersion, kind and metadata`);
      continue;
    }
    if (patches.has(file)) {
      t.pass(`${name}: a patch, validated after it is applied`);
      continue;
    }
    // Resources and stand-alone files: each document is a complete object that passes its schema.
    const docs = readYamlDocs(file);
    t.ok(docs.length > 0, `${name} has documents`);
    docs.forEach((doc, i) => {
      let o: K8sObject;
      try {
        o = asObject(doc, `${name} document ${i + 1}`);
      } catch (err) {
        t.fail((err as Error).message);
        return;
      }
      t.equal(schemaErrors(o), null, `${name}: ${idOf(o)} passes the Kubernetes schema`);
    });
  }
});

t.test('each kustomization builds from local files only, and every object passes the Kubernetes schema', async (t) => {
  for (const dir of kustomizations()) {
    const name = relative(root, dir);
    const { objects } = build(dir, k8sDir);
    t.ok(objects.length > 0, `${name} builds`);
    for (const o of objects) t.equal(schemaErrors(o), null, `${name}: ${idOf(o)} passes the Kubernetes schema`);
  }
});

for (const overlay of overlays) {
  t.test(`overlay ${overlay}: policy`, async (t) => {
    const { objects } = build(join(k8sDir, 'overlays', overlay), k8sDir);
    t.same(policyViolations(objects), [], 'no policy violations');
    const kinds = new Set(objects.map((o) => o.kind));
    for (const kind of ['Deployment', 'Service', 'ConfigMap', 'Secret', 'PodDisruptionBudget']) t.ok(kinds.has(kind), `has a ${kind}`);

    const { config, warnings } = berthConfig(configMapConfig(objects), `${overlay} berth-config`);
    t.same(warnings, [], 'berth loads the ConfigMap without warnings');
    t.equal(config.http.addr, ':5000');
    const deployment = berthDeployment(objects);
    const spec = deployment.spec as {
      replicas: number;
      strategy?: { type?: string };
      template: { spec: { volumes: Array<Record<string, unknown>> } };
    };
    const secret = objects.find((o) => o.kind === 'Secret' && o.metadata.name === 'berth-auth');
    t.ok(secret && isMap(secret.stringData) && typeof secret.stringData.htpasswd === 'string', 'berth-auth holds htpasswd');
    t.ok(isSection(config.auth) && isSection(config.auth.htpasswd), 'auth.htpasswd configured');
    t.equal((config.auth?.htpasswd as { path?: string } | undefined)?.path, '/etc/berth-auth/htpasswd', 'htpasswd read from the Secret mount');

    const configVolume = spec.template.spec.volumes.find((v) => v.name === 'config');
    t.match(configVolume, { configMap: { name: /^berth-config-[a-z0-9]{10}$/ } }, 'the pods mount the generated, content-named ConfigMap');
    t.equal((spec.template.spec as { securityContext?: { fsGroupChangePolicy?: string } }).securityContext?.fsGroupChangePolicy, 'OnRootMismatch');

    if (overlay === 'single-node') {
      t.equal(spec.replicas, 1, 'one replica, set by the overlay');
      t.notOk(
        objects.some((o) => o.kind === 'HorizontalPodAutoscaler'),
        'no autoscaler for a ReadWriteOnce volume',
      );
      t.match(config.berth.raw, { gc: { interval: '24h' } }, 'gc runs inside the server (a CronJob could not mount the volume)');
      t.equal(spec.strategy?.type, 'Recreate', 'a ReadWriteOnce volume: the old pod stops first');
      t.equal(config.storage.driver, 'filesystem');
      t.equal(config.storage.filesystem.rootDirectory, '/var/lib/registry');
      const data = spec.template.spec.volumes.find((v) => v.name === 'data');
      t.same(data, { name: 'data', persistentVolumeClaim: { claimName: 'berth-data' } }, 'data on the PVC, emptyDir removed');
    } else {
      t.equal(spec.replicas, undefined, 'the HPA owns the replica count');
      t.match(objects.find((o) => o.kind === 'HorizontalPodAutoscaler')?.spec, { minReplicas: 3 });
      t.equal(config.storage.driver, 's3');
      t.ok(config.redis, 'upload sessions in Redis');
      t.ok(
        objects.some((o) => o.kind === 'Service' && o.metadata.name === config.redis?.addr.split(':')[0]),
        'redis.addr names a Service of the build',
      );
      const redis = objects.find((o) => o.metadata.name === 'berth-redis' && o.kind === 'StatefulSet');
      t.ok(redis, 'Redis is a StatefulSet');
      t.match(redis?.spec, { volumeClaimTemplates: [{ metadata: { name: 'data' } }] }, 'Redis keeps its data on a PersistentVolumeClaim');
      const args = JSON.stringify(
        (redis?.spec as { template: { spec: { containers: Array<{ args: string[] }> } } }).template.spec.containers[0]?.args,
      );
      t.match(args, /"--appendonly","yes"/, 'with the append-only file on');
      const gc = objects.find((o) => o.kind === 'CronJob' && o.metadata.name === 'berth-gc');
      const job = gc?.spec as
        | {
            concurrencyPolicy: string;
            jobTemplate: { spec: { template: { spec: { containers: Array<{ command: string[] }>; volumes: Array<Record<string, unknown>> } } } };
          }
        | undefined;
      t.same(
        job?.jobTemplate.spec.template.spec.containers[0]?.command.slice(0, 3),
        ['berth', 'gc', '/etc/berth/config.yml'],
        'a gc CronJob runs berth gc (on PATH in the image)',
      );
      t.same(
        job?.jobTemplate.spec.template.spec.volumes.find((v) => v.name === 'config'),
        configVolume,
        'with the same configuration as the registry',
      );

      // The MinIO example, uncommented, disables redirects: nodes cannot resolve the in-cluster endpoint name.
      const minio = configMapConfig(objects).replace(/^(\s*)# (regionendpoint|forcepathstyle|redirect| {2}disable):/gm, '$1$2:');
      const minioConfig = berthConfig(minio, 's3-redis with MinIO');
      t.same(minioConfig.warnings, [], 'the uncommented MinIO example loads');
      t.match(minioConfig.config.storage.s3, { endpoint: /\.svc[:/]/ });
      t.equal(minioConfig.config.storage.redirectDisabled, true, 'redirects are disabled with the in-cluster endpoint');
    }
  });
}

t.test('the base itself passes the policy (no replica count: the overlays own it)', async (t) => {
  const { objects } = build(join(k8sDir, 'base'), k8sDir);
  t.same(policyViolations(objects), []);
  t.equal((berthDeployment(objects).spec as { replicas?: number }).replicas, undefined);
  t.same(berthConfig(configMapConfig(objects), 'base').warnings, []);
});

t.test('examples: NodePort and Ingress in front of the berth Service', async (t) => {
  const { objects } = build(join(k8sDir, 'overlays', 's3-redis'), k8sDir);
  const examples = ['nodeport.yaml', 'ingress.yaml'].flatMap((f) =>
    readYamlDocs(join(k8sDir, 'examples', f)).map((d, i) => asObject(d, `${f} document ${i + 1}`)),
  );
  t.same(policyViolations([...objects, ...examples]), [], 'with an overlay, the examples pass the policy (Service targets, selectors)');
  const nodePort = examples.find((o) => o.kind === 'Service');
  t.match(nodePort?.spec, { type: 'NodePort', ports: [{ nodePort: 30500, targetPort: 'http' }] });
  const ingress = examples.find((o) => o.kind === 'Ingress');
  t.match(ingress?.spec, { rules: [{ http: { paths: [{ backend: { service: { name: 'berth', port: { name: 'http' } } } }] } }] });
  t.ok(
    objects.some((o) => o.kind === 'Service' && o.metadata.name === 'berth'),
    "the Ingress backend is the overlay's Service",
  );
  t.equal(
    (ingress?.metadata.annotations as Record<string, string>)['nginx.ingress.kubernetes.io/proxy-body-size'],
    '0',
    'no body size limit for layers',
  );
});

t.test('the policy catches broken manifests', async (t) => {
  const { objects } = build(join(k8sDir, 'overlays', 's3-redis'), k8sDir);
  const breakIt = (patch: unknown, kind = 'Deployment'): string[] =>
    policyViolations(objects.map((o) => (o.kind === kind && o.metadata.name === 'berth' ? (strategicMerge(o, patch) as K8sObject) : o)));
  const container = (c: Record<string, unknown>) => ({ spec: { template: { spec: { containers: [{ name: 'berth', ...c }] } } } });

  t.match(breakIt(container({ readinessProbe: { httpGet: { path: '/readyz', port: 5000 } } })), [/readinessProbe must use a named port/]);
  t.match(breakIt(container({ livenessProbe: { httpGet: { path: '/healthz', port: 'metrics' } } })), [/livenessProbe port metrics is not a port/]);
  t.match(breakIt(container({ securityContext: { readOnlyRootFilesystem: false } })), [/readOnlyRootFilesystem must be true/]);
  t.match(
    breakIt({
      spec: { template: { spec: { securityContext: { runAsUser: null }, containers: [{ name: 'berth', securityContext: { runAsUser: null } }] } } },
    }),
    [/runAsUser must be a numeric non-root uid/],
  );
  t.match(breakIt(container({ resources: { requests: { cpu: null } } })), [/requests\.cpu is required/, /scales on cpu/]);
  t.match(breakIt({ spec: { replicas: 3 } }), [/sets replicas while .*HorizontalPodAutoscaler\/berth scales it/]);
  t.match(
    breakIt(
      { spec: { metrics: [{ type: 'Resource', resource: { name: 'memory', target: { type: 'Utilization', averageUtilization: 80 } } }] } },
      'HorizontalPodAutoscaler',
    ),
    [/scales on memory/],
  );
  t.match(breakIt({ spec: { template: { spec: { securityContext: { fsGroupChangePolicy: null } } } } }), [
    /fsGroup without fsGroupChangePolicy: OnRootMismatch/,
  ]);
  const plainConfigMap = objects.map((o) =>
    o.kind === 'ConfigMap' && o.metadata.name.startsWith('berth-config-') ? { ...o, metadata: { ...o.metadata, name: 'berth-config' } } : o,
  );
  const pointed = plainConfigMap.map((o) =>
    o.kind === 'Deployment' && o.metadata.name === 'berth'
      ? (strategicMerge(o, { spec: { template: { spec: { volumes: [{ name: 'config', configMap: { name: 'berth-config' } }] } } } }) as K8sObject)
      : o,
  );
  t.match(policyViolations(pointed), [/mounts ConfigMap berth-config without a content hash/], 'a hand-written ConfigMap would not roll the pods');
  t.match(
    policyViolations(objects.map((o) => (o.kind === 'CronJob' ? (strategicMerge(o, { spec: { concurrencyPolicy: 'Allow' } }) as K8sObject) : o))),
    [/CronJob\/berth-gc: concurrencyPolicy must be Forbid/],
  );
  t.same(breakIt({ spec: { minReplicas: 1 } }, 'HorizontalPodAutoscaler'), [], 'maxUnavailable: 1 still allows a drain at 1 replica');
  t.same(breakIt({}), [], 'the unbroken build has no violations');
  t.match(breakIt({ spec: { maxUnavailable: null, minAvailable: 3 } }, 'PodDisruptionBudget'), [/allows no disruption at .*minimum of 3/]);
  t.match(breakIt({ spec: { template: { spec: { volumes: [{ name: 'tmp', emptyDir: null, configMap: { name: 'berth-config' } }] } } } }), [
    /\/tmp must be an emptyDir/,
  ]);
  t.match(breakIt(container({ env: [{ name: 'REGISTRY_REDIS_PASSWORD', valueFrom: { secretKeyRef: { name: 'berth-redis', key: 'pass' } } }] })), [
    /Secret berth-redis has no key pass/,
  ]);
  t.match(
    schemaErrors(strategicMerge(berthDeployment(objects), { spec: { replicas: 'three' } }) as K8sObject),
    /spec\/replicas must be integer/,
    'the schema check fails a wrongly typed field',
  );
});

t.test('PodDisruptionBudget arithmetic', async (t) => {
  const pdb = (spec: Record<string, unknown>): K8sObject => ({ apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', metadata: { name: 'p' }, spec });
  t.equal(allowedDisruptions(pdb({ maxUnavailable: 1 }), 1), 1, 'maxUnavailable: 1 lets a single replica be drained');
  t.equal(allowedDisruptions(pdb({ minAvailable: 1 }), 1), 0, 'minAvailable: 1 on one replica blocks drains');
  t.equal(allowedDisruptions(pdb({ minAvailable: 2 }), 3), 1);
  t.equal(allowedDisruptions(pdb({ minAvailable: '100%' }), 3), 0);
  t.equal(allowedDisruptions(pdb({ maxUnavailable: '25%' }), 3), 1, 'percentages round up');
});

t.test('kustomizations may only reference existing local files', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-kustomize-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const write = (rel: string, text: string) => {
    mkdirSync(join(dir, rel, '..'), { recursive: true });
    writeFileSync(join(dir, rel), text);
  };
  const head = 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n';
  write('remote/kustomization.yaml', `${head}resources:\n  - github.com/example/berth//deploy?ref=v1\n`);
  t.throws(() => build(join(dir, 'remote'), dir), /remote base/);
  write('url/kustomization.yaml', `${head}resources:\n  - https://example.com/berth.yaml\n`);
  t.throws(() => build(join(dir, 'url'), dir), /remote base/);
  write('missing/kustomization.yaml', `${head}resources:\n  - deployment.yaml\n`);
  t.throws(() => build(join(dir, 'missing'), dir), /does not exist/);
  write('outside/kustomization.yaml', `${head}resources:\n  - ../../etc/passwd\n`);
  t.throws(() => build(join(dir, 'outside'), dir), /leaves/);
  write('generator/kustomization.yaml', `${head}configMapGenerator:\n  - name: x\n    literals: [a=b]\n`);
  t.throws(() => build(join(dir, 'generator'), dir), /not modelled/);
});

/** Object lists compared order-independently: sorted by identity, named list items sorted by name. */
function canonical(v: unknown): unknown {
  if (Array.isArray(v)) {
    const items = v.map(canonical);
    const key = (x: unknown) => (isMap(x) ? String(x.name ?? x.mountPath ?? x.containerPort ?? x.port ?? JSON.stringify(x)) : JSON.stringify(x));
    return items.every(isMap) ? [...items].sort((a, b) => key(a).localeCompare(key(b))) : items;
  }
  if (isMap(v))
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, canonical(v[k])]),
    );
  return v;
}

const run = promisify(execFile);
const kubectl = await run('kubectl', ['version', '--client'], { timeout: 10_000 }).then(
  () => true,
  () => false,
);

t.test('the kustomize subset builds what kubectl kustomize builds', { skip: kubectl ? false : 'kubectl is not installed' }, async (t) => {
  for (const dir of [join(k8sDir, 'base'), ...overlays.map((o) => join(k8sDir, 'overlays', o))]) {
    const { stdout } = await run('kubectl', ['kustomize', dir], { timeout: 30_000, maxBuffer: 16 * 1024 * 1024 });
    const theirs = readYamlDocsFromText(stdout).sort((a, b) => idOf(a).localeCompare(idOf(b)));
    const ours = build(dir, k8sDir).objects.sort((a, b) => idOf(a).localeCompare(idOf(b)));
    t.same(canonical(ours), canonical(theirs), `${relative(root, dir)}: same objects`);
  }
});

function readYamlDocsFromText(text: string): K8sObject[] {
  return text
    .split(/^---$/m)
    .map((doc) => parseYaml(doc) as unknown)
    .filter((d) => d !== null && d !== undefined)
    .map((d, i) => asObject(d, `kubectl output document ${i + 1}`));
}

t.test('client snippets', async (t) => {
  const daemon = JSON.parse(readFileSync(join(clientsDir, 'daemon.json'), 'utf8')) as Record<string, unknown>;
  t.ok(
    Array.isArray(daemon['registry-mirrors']) &&
      (daemon['registry-mirrors'] as unknown[]).every((m) => typeof m === 'string' && /^https?:\/\//.test(m)),
    'registry-mirrors: a list of URLs',
  );
  t.ok(
    Array.isArray(daemon['insecure-registries']) &&
      (daemon['insecure-registries'] as unknown[]).every((m) => typeof m === 'string' && !m.includes('://')),
    'insecure-registries: a list of host[:port]',
  );

  for (const host of ['docker.io', 'registry.example.com', 'localhost:30500']) {
    const text = readFileSync(join(clientsDir, 'containerd', host, 'hosts.toml'), 'utf8');
    t.match(text, /^server = "https?:\/\/[^"]+"$/m, `${host}: server`);
    t.match(text, /^\[host\."https?:\/\/[^"]+"\]$/m, `${host}: a host table`);
    t.match(text, /^\s+capabilities = \["pull", "resolve"(, "push")?\]$/m, `${host}: capabilities`);
  }
  t.notMatch(
    readFileSync(join(clientsDir, 'containerd', 'docker.io', 'hosts.toml'), 'utf8'),
    /^\s+capabilities = .*push/m,
    'a mirror is for pulls only',
  );
  t.match(
    readFileSync(join(clientsDir, 'containerd', 'registry.example.com', 'hosts.toml'), 'utf8'),
    /^\s+ca = "\/etc\/containerd\/certs\.d\/registry\.example\.com\/ca\.crt"$/m,
    'a private CA is trusted per host',
  );
  const nodePort = readFileSync(join(clientsDir, 'containerd', 'localhost:30500', 'hosts.toml'), 'utf8');
  t.match(nodePort, /^server = "http:\/\/localhost:30500"$/m, 'nodes pull over plain HTTP from the NodePort on loopback');
  t.match(readFileSync(join(k8sDir, 'examples', 'nodeport.yaml'), 'utf8'), /nodePort: 30500/, 'the port the hosts.toml names');

  const docs = readYamlDocs(join(clientsDir, 'image-pull-secret.yaml')).map((d, i) => asObject(d, `image-pull-secret.yaml ${i + 1}`));
  const secret = docs.find((o) => o.kind === 'Secret');
  t.equal(secret?.type, 'kubernetes.io/dockerconfigjson');
  const json = isMap(secret?.stringData) ? secret.stringData['.dockerconfigjson'] : undefined;
  const parsed = JSON.parse(String(json)) as { auths: Record<string, { username: string; password: string; auth: string }> };
  for (const [host, entry] of Object.entries(parsed.auths)) {
    t.equal(Buffer.from(entry.auth, 'base64').toString(), `${entry.username}:${entry.password}`, `${host}: auth is base64(user:password)`);
  }
  const sa = docs.find((o) => o.kind === 'ServiceAccount');
  t.same(sa?.imagePullSecrets, [{ name: secret?.metadata.name }], 'the ServiceAccount attaches the pull secret');
});
