/**
 * Which optional packages a running berth has loaded: the packages behind features a configuration may leave off
 * (metrics, Redis, S3, ACME, token auth) cost memory and startup time, and are loaded only when configured. The
 * real CLI runs with `--import` of test/helpers/module-trace.ts, which lists every module it resolves.
 */
import t, { type Test } from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnBerth } from '../helpers/berth-process.js';
import { tempDir } from '../helpers/ports.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';

const MODULE_TRACE = fileURLToPath(new URL('../helpers/module-trace.js', import.meta.url));

/** Packages a default berth (filesystem storage, no Redis, no auth, no proxy, no TLS) does not need. */
const OPTIONAL = ['prom-client', 'ioredis', '@aws-sdk/client-s3', '@aws-sdk/s3-request-presigner', 'acme-client', 'jose', 'bcryptjs'];

/** The packages among the traced module URLs (`.../node_modules/@scope/name/...` → `@scope/name`). */
async function loadedPackages(file: string): Promise<Set<string>> {
  const packages = new Set<string>();
  for (const url of (await readFile(file, 'utf8')).split('\n')) {
    const at = url.lastIndexOf('/node_modules/');
    if (at < 0) continue;
    const parts = url.slice(at + '/node_modules/'.length).split('/');
    packages.add(parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? ''));
  }
  return packages;
}

/** Starts berth with `env`, pushes and pulls an image, and returns the packages it loaded meanwhile. */
async function packagesOf(t: Test, env: Record<string, string>): Promise<{ packages: Set<string>; url: string }> {
  const dir = await tempDir(t, 'berth-modules-');
  const trace = join(dir, 'modules.txt');
  const berth = await spawnBerth(
    t,
    { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: join(dir, 'data'), BERTH_MODULE_TRACE: trace, ...env },
    { nodeArgs: ['--import', MODULE_TRACE], timeoutMs: 30_000 },
  );
  // Uploads, manifests, pulls and the readiness check: what a registry does all day.
  const client = new RegistryClient(berth.url);
  const image = await client.pushImage('app', 'v1', [randomLayer(4096)]);
  t.equal((await client.request('GET', `/v2/app/blobs/${image.layers[0]!.digest}`)).status, 200);
  t.equal((await client.request('GET', '/v2/app/manifests/v1', { headers: { accept: image.manifest.mediaType } })).status, 200);
  t.equal((await fetch(`${berth.url}/readyz`)).status, 200);
  return { packages: await loadedPackages(trace), url: berth.url };
}

t.test('berth.metrics.enabled: false and defaults otherwise: no optional package is loaded', async (t) => {
  const { packages, url } = await packagesOf(t, { REGISTRY_BERTH_METRICS_ENABLED: 'false' });
  t.ok(packages.has('fastify'), 'the trace sees the packages berth loads');
  for (const name of OPTIONAL) t.notOk(packages.has(name), `${name} is not loaded`);
  t.equal((await fetch(`${url}/metrics`)).status, 404, 'no /metrics');
});

t.test('metrics on (the default): prom-client is loaded, the other optional packages are not', async (t) => {
  const { packages, url } = await packagesOf(t, {});
  t.ok(packages.has('prom-client'), 'prom-client is loaded');
  for (const name of OPTIONAL.filter((n) => n !== 'prom-client')) t.notOk(packages.has(name), `${name} is not loaded`);
  const text = await fetch(`${url}/metrics`).then((r) => r.text());
  t.match(text, /berth_http_requests_total\{method="PUT",route="manifest",status="201"\} 1/);
});
