import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { userAdd } from '../../src/auth/htpasswd.js';
import { startBerth } from '../helpers/berth.js';
import {
  captureAccessLog,
  containersEnv,
  headDigest,
  MANIFEST_ACCEPT,
  registryHost,
  skipUnlessInstalled,
  startContainerd,
  type ContainerdProcess,
  type ContainersEnv,
} from '../helpers/containers.js';
import { tempDir } from '../helpers/ports.js';
import { sha256 } from '../helpers/digest.js';

/**
 * Issue 2 with containerd 1.6 (what Kubernetes nodes pull with): `ctr image pull --plain-http` of images buildah
 * pushed to berth, single-platform (OCI and Docker schema 2) and a two-platform index, and containerd's content
 * store holds exactly the bytes berth serves under the digests berth reports. Plus containerd's token flow (OAuth2
 * `POST /auth/token` with `grant_type=password`, issue 4) against berth's built-in token server.
 */

const KiB = 1024;

interface Index {
  mediaType: string;
  manifests: Array<{ digest: string; mediaType: string; platform?: { os: string; architecture: string } }>;
}
interface Manifest {
  config: { digest: string };
  layers: Array<{ digest: string }>;
}

/** GETs a manifest from berth: its bytes' digest, the digest header and the parsed body. */
async function getManifest<T>(url: string, repo: string, ref: string): Promise<{ digest: string; header: string | null; body: T }> {
  const res = await fetch(`${url}/v2/${repo}/manifests/${ref}`, { headers: { Accept: MANIFEST_ACCEPT } });
  if (res.status !== 200) throw new Error(`GET manifest ${repo}:${ref}: ${res.status}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  return { digest: sha256(bytes), header: res.headers.get('docker-content-digest'), body: JSON.parse(bytes.toString('utf8')) as T };
}

/** Commits a one-file scratch image for `arch` into `env`'s local storage as `name`. */
async function buildScratch(env: ContainersEnv, dir: string, name: string, arch: string, size: number): Promise<void> {
  const file = join(dir, `${name}.bin`);
  await writeFile(file, randomBytes(size));
  const container = (await env.buildah(['from', '--signature-policy', env.policy, 'scratch'])).stdout.trim();
  await env.buildah(['copy', container, file, `/${name}.bin`]);
  await env.buildah(['config', '--os', 'linux', '--arch', arch, '--cmd', `["/${name}.bin"]`, container]);
  await env.buildah(['commit', '--signature-policy', env.policy, container, name]);
  await env.buildah(['rm', container]);
}

/** `ctr image ls` as REF → DIGEST. */
async function imageDigests(ctd: ContainerdProcess): Promise<Map<string, string>> {
  const out = (await ctd.ctr(['image', 'ls'])).stdout.split('\n').slice(1);
  const refs = new Map<string, string>();
  for (const line of out) {
    const [ref, , digest] = line.trim().split(/\s+/);
    if (ref && digest) refs.set(ref, digest);
  }
  return refs;
}

/** `ctr content ls -q`: the digests in containerd's content store. */
async function contentDigests(ctd: ContainerdProcess): Promise<Set<string>> {
  return new Set(
    (await ctd.ctr(['content', 'ls', '-q'])).stdout
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean),
  );
}

/** Asserts containerd's copy of the JSON document `digest` (manifest, index, config) hashes to it. */
async function assertContentIntact(t: Test, ctd: ContainerdProcess, digest: string): Promise<void> {
  // `ctr content get` prints the stored bytes; these documents are UTF-8 JSON, so the decoded text re-encodes exactly.
  const text = (await ctd.ctr(['content', 'get', digest])).stdout;
  t.equal(sha256(Buffer.from(text, 'utf8')), digest, `containerd's copy of ${digest} hashes to its digest`);
}

t.test('containerd pulls from berth', { skip: skipUnlessInstalled('containerd', 'ctr', 'buildah') }, async (t) => {
  const berth = await startBerth(t, {});
  const host = registryHost(berth.url);
  const ctd = await startContainerd(t);
  const env = await containersEnv(t);
  const dir = await tempDir(t, 'berth-e2e-ctd-');

  await t.test('a single-platform OCI image pushed by buildah', async (t) => {
    await buildScratch(env, dir, 'single', 'amd64', 300 * KiB);
    const digestFile = join(dir, 'single.digest');
    await env.buildah(['push', ...env.remoteFlags, '--digestfile', digestFile, 'single', `docker://${host}/ctd/single:1`]);
    const pushed = (await readFile(digestFile, 'utf8')).trim();
    const served = await getManifest<Manifest>(berth.url, 'ctd/single', '1');
    t.equal(served.header, pushed, 'berth reports the digest buildah pushed');

    await ctd.ctr(['image', 'pull', '--plain-http', `${host}/ctd/single:1`]);
    t.equal((await imageDigests(ctd)).get(`${host}/ctd/single:1`), pushed, 'ctr image ls shows the digest berth reports');
    const content = await contentDigests(ctd);
    for (const d of [pushed, served.body.config.digest, ...served.body.layers.map((l) => l.digest)]) {
      t.ok(content.has(d), `containerd's content store holds ${d}`);
    }
    await assertContentIntact(t, ctd, pushed);
    await assertContentIntact(t, ctd, served.body.config.digest);
  });

  await t.test('a Docker schema 2 image (buildah push --format v2s2)', async (t) => {
    const digestFile = join(dir, 'docker.digest');
    await env.buildah(['push', ...env.remoteFlags, '--format', 'v2s2', '--digestfile', digestFile, 'single', `docker://${host}/ctd/docker:1`]);
    const pushed = (await readFile(digestFile, 'utf8')).trim();
    const res = await fetch(`${berth.url}/v2/ctd/docker/manifests/1`, { method: 'HEAD', headers: { Accept: MANIFEST_ACCEPT } });
    t.equal(res.headers.get('content-type'), 'application/vnd.docker.distribution.manifest.v2+json');
    t.equal(res.headers.get('docker-content-digest'), pushed);
    await ctd.ctr(['image', 'pull', '--plain-http', `${host}/ctd/docker:1`]);
    t.equal((await imageDigests(ctd)).get(`${host}/ctd/docker:1`), pushed, 'ctr image ls shows the digest berth reports');
    await assertContentIntact(t, ctd, pushed);
  });

  await t.test('a two-platform index: --platform linux/amd64, then --all-platforms', async (t) => {
    await buildScratch(env, dir, 'multi-amd64', 'amd64', 100 * KiB);
    await buildScratch(env, dir, 'multi-arm64', 'arm64', 100 * KiB);
    await env.buildah(['manifest', 'create', 'multi-list']);
    await env.buildah(['manifest', 'add', 'multi-list', 'multi-amd64']);
    await env.buildah(['manifest', 'add', 'multi-list', 'multi-arm64']);
    const digestFile = join(dir, 'multi.digest');
    await env.buildah(['manifest', 'push', '--all', ...env.remoteFlags, '--digestfile', digestFile, 'multi-list', `docker://${host}/ctd/multi:1`]);
    const pushed = (await readFile(digestFile, 'utf8')).trim();
    const index = await getManifest<Index>(berth.url, 'ctd/multi', '1');
    t.equal(index.header, pushed, 'berth reports the index digest buildah pushed');
    t.equal(index.digest, pushed, 'and serves bytes with that digest');
    const byArch = new Map(index.body.manifests.map((m) => [m.platform?.architecture ?? '', m.digest]));
    const amd64 = byArch.get('amd64');
    const arm64 = byArch.get('arm64');
    t.ok(amd64 && arm64, 'the index has an amd64 and an arm64 image');
    if (!amd64 || !arm64) return;

    await ctd.ctr(['image', 'pull', '--plain-http', '--platform', 'linux/amd64', `${host}/ctd/multi:1`]);
    t.equal((await imageDigests(ctd)).get(`${host}/ctd/multi:1`), pushed, 'ctr image ls shows the index digest');
    let content = await contentDigests(ctd);
    t.ok(content.has(pushed), 'the index is in the content store');
    t.ok(content.has(amd64), 'the amd64 manifest was fetched');
    t.notOk(content.has(arm64), 'the arm64 manifest was not (only linux/amd64 asked for)');
    await assertContentIntact(t, ctd, pushed);

    await ctd.ctr(['image', 'pull', '--plain-http', '--all-platforms', `${host}/ctd/multi:1`]);
    content = await contentDigests(ctd);
    const arm = await getManifest<Manifest>(berth.url, 'ctd/multi', arm64);
    t.equal(arm.header, arm64, 'berth serves the child manifest by digest');
    for (const d of [arm64, arm.body.config.digest, ...arm.body.layers.map((l) => l.digest)]) {
      t.ok(content.has(d), `--all-platforms fetched ${d}`);
    }
    await assertContentIntact(t, ctd, arm64);
    t.equal(await headDigest(berth.url, 'ctd/multi', '1'), pushed, 'the tag still resolves to the index');
  });
});

t.test("containerd logs in to berth's built-in token server", { skip: skipUnlessInstalled('containerd', 'ctr', 'buildah') }, async (t) => {
  const dir = await tempDir(t, 'berth-e2e-ctd-auth-');
  const users = join(dir, 'htpasswd');
  await userAdd(users, 'kube', 'kube-pw');
  const log = captureAccessLog();
  const berth = await startBerth(
    t,
    {
      log: { level: 'info', accesslog: { disabled: false } },
      auth: { builtin: { users, rules: [{ who: 'kube', repository: '**', actions: ['*'] }] } },
    },
    { logger: log.logger },
  );
  const host = registryHost(berth.url);
  const env = await containersEnv(t);
  await buildScratch(env, dir, 'private', 'amd64', 64 * KiB);
  const digestFile = join(dir, 'private.digest');
  await env.buildah(['push', ...env.remoteFlags, '--creds', 'kube:kube-pw', '--digestfile', digestFile, 'private', `docker://${host}/ctd/private:1`]);
  const pushed = (await readFile(digestFile, 'utf8')).trim();
  const ctd = await startContainerd(t);
  const ref = `${host}/ctd/private:1`;

  await t.rejects(ctd.ctr(['image', 'pull', '--plain-http', ref]), /401|unauthorized|authorization/i, 'no credentials: refused');
  await t.rejects(
    ctd.ctr(['image', 'pull', '--plain-http', '--user', 'kube:wrong', ref]),
    /401|unauthorized|authorization/i,
    'wrong password: refused',
  );
  t.notOk((await imageDigests(ctd)).has(ref), 'nothing pulled so far');

  const before = log.entries().length;
  await ctd.ctr(['image', 'pull', '--plain-http', '--user', 'kube:kube-pw', ref]);
  t.equal((await imageDigests(ctd)).get(ref), pushed, 'pulled with the right password: ctr image ls shows the pushed digest');
  const tokenRequests = log
    .entries()
    .slice(before)
    .filter((e) => e.url.startsWith('/auth/token'));
  // Docker token spec (oauth.md): containerd fetches its token with `POST /auth/token`, `grant_type=password`.
  t.ok(
    tokenRequests.some((e) => e.method === 'POST' && e.status === 200),
    `containerd got its token from the OAuth2 POST endpoint\n${log.dump()}`,
  );
});
