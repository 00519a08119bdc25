import { join } from 'node:path';
import t from 'tap';
import { userAdd } from '../../src/auth/htpasswd.js';
import { startBerth } from '../helpers/berth.js';
import { captureAccessLog, MANIFEST_ACCEPT, registryHost, skipUnlessInstalled, startContainerd } from '../helpers/containers.js';
import { criImageClient, isGrpcError, makeRunnableImageLayout, writeHostsToml } from '../helpers/cri.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';
import { accessLog, startTokenHub } from '../proxy/helpers.js';

/**
 * The kubelet's path (issues 2, 4 and 5): containerd 1.6 with its `cri` plugin, driven over the CRI image service
 * (`runtime.v1.ImageService` PullImage / ImageStatus / ListImages on containerd's gRPC socket) as the kubelet does
 * for a pod's `image:`. The registry host configuration is containerd's `config_path` hosts dir:
 * - `127.0.0.1:PORT/<repo>:<tag>` pushed to berth, plain HTTP through `127.0.0.1:PORT/hosts.toml`;
 * - `busybox`-style Docker Hub names through berth as the `docker.io` mirror (pull-through cache of a local
 *   docker-registry behind a token server);
 * - an image pull secret: PullImage's AuthConfig (username/password) against berth's built-in token server.
 * ImageStatus must report the manifest digest berth serves (`repo_digests`).
 */

/** berth's `Docker-Content-Digest` for a manifest (with a bearer token when given). */
async function servedDigest(url: string, repo: string, ref: string, token?: string): Promise<string | null> {
  const res = await fetch(`${url}/v2/${repo}/manifests/${ref}`, {
    method: 'HEAD',
    headers: { accept: MANIFEST_ACCEPT, ...(token ? { authorization: `Bearer ${token}` } : {}) },
  });
  return res.status === 200 ? res.headers.get('docker-content-digest') : null;
}

/** A token from berth's built-in token server for `scope`, with Basic credentials. */
async function token(url: string, user: string, password: string, scope: string): Promise<string> {
  const res = await fetch(`${url}/auth/token?service=berth&scope=${encodeURIComponent(scope)}`, {
    headers: { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` },
  });
  if (res.status !== 200) throw new Error(`token for ${scope}: ${res.status}`);
  return ((await res.json()) as { token: string }).token;
}

t.test('the kubelet pulls through the CRI image service', { skip: skipUnlessInstalled('containerd') }, async (t) => {
  const hub = await startTokenHub(t);
  const src = await tempDir(t, 'berth-e2e-cri-src-');
  const web = await makeRunnableImageLayout(src, { tag: 'web' });
  const secret = await makeRunnableImageLayout(src, { tag: 'secret' });
  const bbox = await makeRunnableImageLayout(src, { tag: 'bbox' });
  await hub.seed(src, 'bbox', 'library/bbox', '1');

  const dir = await tempDir(t, 'berth-e2e-cri-');
  const users = join(dir, 'htpasswd');
  await userAdd(users, 'kube', 'kube-pw');
  const log = captureAccessLog();
  const berth = await startBerth(
    t,
    {
      log: { level: 'info', accesslog: { disabled: false } },
      auth: {
        builtin: {
          users,
          rules: [
            { who: 'anonymous', repository: 'apps/**', actions: ['pull'] },
            { who: 'anonymous', repository: 'library/**', actions: ['pull'] },
            { who: 'kube', repository: '**', actions: ['*'] },
          ],
        },
      },
      proxy: { upstreams: [{ name: 'docker.io', url: hub.registry.url, repositories: ['library/**'], tagttl: '1h', timeout: '30s' }] },
    },
    { logger: log.logger },
  );
  const host = registryHost(berth.url);
  const push = (tag: string, repo: string) =>
    skopeo([
      'copy',
      '--preserve-digests',
      '--dest-tls-verify=false',
      '--dest-creds',
      'kube:kube-pw',
      `oci:${src}:${tag}`,
      dockerRef(berth.url, repo, '1'),
    ]);
  await push('web', 'apps/web');
  await push('secret', 'private/db');

  const hostsDir = join(dir, 'hosts');
  // berth speaks plain HTTP: its host entry says so (containerd 1.6 defaults to HTTPS).
  await writeHostsToml(hostsDir, host, { server: berth.url, mirror: berth.url });
  // Docker Hub through berth only; the real server is a closed loopback port.
  await writeHostsToml(hostsDir, 'docker.io', { server: 'http://127.0.0.1:1', mirror: berth.url });
  const ctd = await startContainerd(t, { cri: true, hostsDir });
  const cri = criImageClient(t, ctd.socket);

  await t.test('an image pushed to berth, by 127.0.0.1:PORT/repo:tag', async (t) => {
    const ref = `${host}/apps/web:1`;
    t.equal(await cri.imageStatus(ref), undefined, 'not present before the pull');
    const served = await servedDigest(berth.url, 'apps/web', '1', await token(berth.url, 'kube', 'kube-pw', 'repository:apps/web:pull'));
    t.equal(served, web.manifest, 'berth serves the pushed manifest');
    const imageRef = await cri.pullImage(ref);
    t.equal(imageRef, web.config, 'PullImage returns the image ID (the config digest)');
    const status = await cri.imageStatus(ref);
    t.ok(status, 'ImageStatus finds the image');
    t.same(status?.repoTags, [ref], 'repo_tags');
    t.same(status?.repoDigests, [`${host}/apps/web@${web.manifest}`], 'repo_digests carry the manifest digest berth reports');
    t.ok(Number(status?.size) > 0, 'a size');
    const listed = await cri.listImages();
    t.ok(
      listed.some((i) => i.id === web.config && i.repoTags.includes(ref)),
      'ListImages has it',
    );
    t.ok(
      log.entries().some((e) => e.method === 'GET' && e.url === `/v2/apps/web/blobs/${web.layer}` && e.status === 200),
      'containerd fetched the layer from berth',
      { accessLog: log.dump() },
    );
  });

  await t.test('a Docker Hub image in a pod spec (bbox:1) through berth as the docker.io mirror', async (t) => {
    const upstreamMark = accessLog(hub.registry).length;
    const imageRef = await cri.pullImage('bbox:1');
    t.equal(imageRef, bbox.config, 'the image ID of the upstream image');
    const status = await cri.imageStatus('docker.io/library/bbox:1');
    t.same(status?.repoTags, ['docker.io/library/bbox:1'], 'containerd normalized the name');
    t.same(status?.repoDigests, [`docker.io/library/bbox@${bbox.manifest}`], 'repo_digests: the upstream manifest digest');
    const served = await servedDigest(berth.url, 'library/bbox', '1', await token(berth.url, 'kube', 'kube-pw', 'repository:library/bbox:pull'));
    t.equal(served, bbox.manifest, 'the digest berth reports for the tag');
    const seen = log.entries();
    t.ok(
      seen.some((e) => e.url === '/v2/library/bbox/manifests/1?ns=docker.io' && e.status === 200),
      'the CRI pull used the mirror shape',
      { accessLog: log.dump() },
    );
    t.ok(
      accessLog(hub.registry)
        .slice(upstreamMark)
        .some((e) => e.method === 'GET' && e.path === `/v2/library/bbox/blobs/${bbox.layer}` && e.status === 200),
      'berth filled its cache from the upstream',
    );
  });

  await t.test("an image pull secret: AuthConfig against berth's token server", async (t) => {
    const ref = `${host}/private/db:1`;
    const noCreds = await cri.pullImage(ref).then(
      () => undefined,
      (err: unknown) => err,
    );
    t.ok(isGrpcError(noCreds), 'without credentials PullImage fails');
    t.match(isGrpcError(noCreds) ? noCreds.details : '', /401|unauthorized|authoriz/i, 'because berth refused', { error: String(noCreds) });
    const wrong = await cri.pullImage(ref, { username: 'kube', password: 'wrong' }).then(
      () => undefined,
      (err: unknown) => err,
    );
    t.ok(isGrpcError(wrong), 'a wrong password fails');
    t.equal(await cri.imageStatus(ref), undefined, 'nothing pulled so far');

    const before = log.entries().length;
    const imageRef = await cri.pullImage(ref, { username: 'kube', password: 'kube-pw' });
    t.equal(imageRef, secret.config, "pulled with the secret's credentials");
    const status = await cri.imageStatus(ref);
    t.same(status?.repoDigests, [`${host}/private/db@${secret.manifest}`], 'repo_digests: the pushed manifest digest');
    const tokenRequests = log
      .entries()
      .slice(before)
      .filter((e) => e.url.startsWith('/auth/token'));
    t.ok(
      tokenRequests.some((e) => e.status === 200),
      'containerd got a token from berth',
      { accessLog: log.dump() },
    );
  });
});
