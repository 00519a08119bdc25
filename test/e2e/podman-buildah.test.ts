import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { startBerth } from '../helpers/berth.js';
import { containersEnv, headDigest, MANIFEST_ACCEPT, registryHost, skipUnlessInstalled, type ContainersEnv } from '../helpers/containers.js';
import { tempDir } from '../helpers/ports.js';
import { fileDigest, sha256 } from '../helpers/digest.js';

/**
 * Issue 2 with the real podman (4.3) and buildah (1.28): "`podman push` ... and pulls it back, byte for byte".
 * buildah builds an image from scratch and pushes it, podman pulls it into fresh storage and pushes it on,
 * `buildah bud` builds on top of it (pulling the base from berth), and every digest the clients report is the one
 * berth answers in `Docker-Content-Digest`.
 */

const MiB = 1 << 20;

interface Manifest {
  mediaType?: string;
  config: { digest: string; mediaType: string };
  layers: Array<{ digest: string; mediaType: string; size: number }>;
  annotations?: Record<string, string>;
}

async function getJson<T>(url: string, accept = MANIFEST_ACCEPT): Promise<{ status: number; contentType: string | null; body: T; digest: string }> {
  const res = await fetch(url, { headers: { Accept: accept } });
  const bytes = Buffer.from(await res.arrayBuffer());
  return {
    status: res.status,
    contentType: res.headers.get('content-type'),
    body: JSON.parse(bytes.toString('utf8')) as T,
    digest: sha256(bytes),
  };
}

/** The sha256 of `path` inside the local image `ref` of `env` (vfs: `buildah mount` is a plain directory). */
async function fileInImage(env: ContainersEnv, ref: string, path: string): Promise<string> {
  const container = (await env.buildah(['from', '--pull=never', '--signature-policy', env.policy, ref])).stdout.trim();
  try {
    const root = (await env.buildah(['mount', container])).stdout.trim();
    return await fileDigest(join(root, path));
  } finally {
    await env.buildah(['rm', container]);
  }
}

t.test('buildah and podman push to and pull from berth', { skip: skipUnlessInstalled('podman', 'buildah') }, async (t) => {
  const berth = await startBerth(t, {});
  const host = registryHost(berth.url);
  const ctx = await tempDir(t, 'berth-e2e-podman-ctx-');
  const randomFile = join(ctx, 'random.bin');
  await writeFile(randomFile, randomBytes(3 * MiB));
  const randomDigest = await fileDigest(randomFile);
  const base = `${host}/e2e/base:1`;

  const builder = await containersEnv(t);
  let baseDigest = '';
  let baseManifest: Manifest | undefined;

  await t.test('buildah builds a scratch image with a 3 MiB file and pushes it', async (t) => {
    const container = (await builder.buildah(['from', '--signature-policy', builder.policy, 'scratch'])).stdout.trim();
    t.ok(container, 'buildah from scratch named a working container');
    await builder.buildah(['copy', container, randomFile, '/data/random.bin']);
    await builder.buildah(['config', '--cmd', '["/data/random.bin"]', '--label', 'org.example.test=berth', container]);
    await builder.buildah(['commit', '--signature-policy', builder.policy, container, base]);
    const digestFile = join(builder.dir, 'base.digest');
    await builder.buildah(['push', ...builder.remoteFlags, '--digestfile', digestFile, base]);
    baseDigest = (await readFile(digestFile, 'utf8')).trim();
    t.match(baseDigest, /^sha256:[0-9a-f]{64}$/, 'buildah reported the pushed digest');
    // distribution-spec: "The Docker-Content-Digest header ... MUST be the digest of the manifest".
    t.equal(await headDigest(berth.url, 'e2e/base', '1'), baseDigest, 'berth answers HEAD of the tag with the digest buildah pushed');
    const got = await getJson<Manifest>(`${berth.url}/v2/e2e/base/manifests/1`);
    t.equal(got.status, 200);
    t.equal(got.digest, baseDigest, 'the manifest bytes berth serves hash to that digest');
    t.equal(got.contentType, 'application/vnd.oci.image.manifest.v1+json', 'buildah pushes an OCI manifest, served with its media type');
    t.equal(got.body.layers.length, 1, 'one layer: the copied file');
    baseManifest = got.body;
    for (const layer of got.body.layers) {
      const res = await fetch(`${berth.url}/v2/e2e/base/blobs/${layer.digest}`, { method: 'HEAD' });
      t.equal(res.status, 200, `layer ${layer.digest} is stored`);
      t.equal(res.headers.get('content-length'), String(layer.size), 'with the size the manifest names');
    }
  });

  await t.test('podman pulls it into fresh storage: same digest, same layers, same bytes', async (t) => {
    t.ok(baseManifest, 'the push succeeded');
    const puller = await containersEnv(t);
    await puller.podman(['pull', ...puller.remoteFlags, base]);
    const inspect = JSON.parse((await puller.podman(['image', 'inspect', base])).stdout) as Array<{
      Digest: string;
      RepoDigests: string[];
      RootFS: { Layers: string[] };
      Config: { Cmd?: string[]; Labels?: Record<string, string> };
    }>;
    const image = inspect[0];
    t.ok(image, 'podman image inspect found the pulled image');
    if (!image || !baseManifest) return;
    t.equal(image.Digest, baseDigest, 'podman records the manifest digest berth served');
    t.ok(image.RepoDigests.includes(`${host}/e2e/base@${baseDigest}`), 'RepoDigests names berth and that digest');
    const config = await getJson<{ rootfs: { diff_ids: string[] } }>(`${berth.url}/v2/e2e/base/blobs/${baseManifest.config.digest}`, '*/*');
    t.equal(config.digest, baseManifest.config.digest, 'the config blob hashes to its digest');
    t.same(image.RootFS.Layers, config.body.rootfs.diff_ids, 'podman unpacked the layers the config names');
    t.same(image.Config.Cmd, ['/data/random.bin'], 'the config survived the round trip');
    t.equal(image.Config.Labels?.['org.example.test'], 'berth');
    t.equal(await fileInImage(puller, base, 'data/random.bin'), randomDigest, 'the 3 MiB file came back byte for byte');

    await t.test('podman pushes it to a second repository and lists its tag', async (t) => {
      const copy = `${host}/e2e/copy:2`;
      const digestFile = join(puller.dir, 'copy.digest');
      await puller.podman(['push', ...puller.remoteFlags, '--digestfile', digestFile, base, copy]);
      const pushed = (await readFile(digestFile, 'utf8')).trim();
      t.equal(await headDigest(berth.url, 'e2e/copy', '2'), pushed, 'berth answers the digest podman pushed');
      const got = await getJson<Manifest>(`${berth.url}/v2/e2e/copy/manifests/2`);
      t.equal(got.body.config.digest, baseManifest?.config.digest, 'same config in the second repository');
      t.equal(got.body.layers.length, 1);
      // Whether podman reused (mounted) the compressed blob or compressed again, the layer is in e2e/copy now.
      for (const layer of got.body.layers) {
        t.equal((await fetch(`${berth.url}/v2/e2e/copy/blobs/${layer.digest}`, { method: 'HEAD' })).status, 200, 'layer present in e2e/copy');
      }
      const search = (await puller.podman(['search', '--list-tags', '--tls-verify=false', `${host}/e2e/copy`])).stdout;
      t.match(search, new RegExp(`${host.replace(/\./g, '\\.')}/e2e/copy\\s+2\\b`), 'podman search --list-tags shows the tag');
      const tags = (await (await fetch(`${berth.url}/v2/e2e/copy/tags/list`)).json()) as { name: string; tags: string[] };
      t.same(tags, { name: 'e2e/copy', tags: ['2'] });
    });

    await t.test('podman pushes Docker schema 2 (--format v2s2) and pulls it back', async (t) => {
      const ref = `${host}/e2e/docker:1`;
      const digestFile = join(puller.dir, 'docker.digest');
      await puller.podman(['push', ...puller.remoteFlags, '--format', 'v2s2', '--digestfile', digestFile, base, ref]);
      const pushed = (await readFile(digestFile, 'utf8')).trim();
      const res = await fetch(`${berth.url}/v2/e2e/docker/manifests/1`, { method: 'HEAD', headers: { Accept: MANIFEST_ACCEPT } });
      t.equal(res.headers.get('docker-content-digest'), pushed);
      t.equal(res.headers.get('content-type'), 'application/vnd.docker.distribution.manifest.v2+json', 'stored with the Docker media type');
      const again = await containersEnv(t);
      await again.podman(['pull', ...again.remoteFlags, ref]);
      const digest = (await again.podman(['image', 'inspect', '--format', '{{.Digest}}', ref])).stdout.trim();
      t.equal(digest, pushed, 'pulled back with the same digest');
      t.equal(await fileInImage(again, ref, 'data/random.bin'), randomDigest, 'and the same bytes');
    });
  });

  await t.test('buildah bud FROM berth builds on the base and pushes the derived image', async (t) => {
    t.ok(baseManifest, 'the base was pushed');
    const bud = await containersEnv(t); // fresh storage: the base must come from berth
    const extra = randomBytes(1000);
    await writeFile(join(ctx, 'extra.bin'), extra);
    await writeFile(join(ctx, 'Dockerfile'), `FROM ${base}\nCOPY extra.bin /data/extra.bin\nCMD ["/data/extra.bin"]\n`);
    const derived = `${host}/e2e/derived:1`;
    await bud.buildah(['bud', '--isolation', 'chroot', ...bud.remoteFlags, '-t', derived, '-f', join(ctx, 'Dockerfile'), ctx]);
    const digestFile = join(bud.dir, 'derived.digest');
    await bud.buildah(['push', ...bud.remoteFlags, '--digestfile', digestFile, derived]);
    const pushed = (await readFile(digestFile, 'utf8')).trim();
    t.equal(await headDigest(berth.url, 'e2e/derived', '1'), pushed, 'berth answers the digest buildah pushed');
    const got = await getJson<Manifest>(`${berth.url}/v2/e2e/derived/manifests/1`);
    t.equal(got.digest, pushed);
    t.equal(got.body.layers.length, 2, 'the base layer plus the COPY layer');
    t.equal(got.body.layers[0]?.digest, baseManifest?.layers[0]?.digest, 'the base layer is the very blob pulled from berth');
    t.equal(got.body.annotations?.['org.opencontainers.image.base.digest'], baseDigest, 'buildah names the base digest it pulled');
    for (const layer of got.body.layers) {
      t.equal(
        (await fetch(`${berth.url}/v2/e2e/derived/blobs/${layer.digest}`, { method: 'HEAD' })).status,
        200,
        `layer ${layer.digest} in e2e/derived`,
      );
    }
    const check = await containersEnv(t);
    await check.podman(['pull', ...check.remoteFlags, derived]);
    t.equal(await fileInImage(check, derived, 'data/extra.bin'), sha256(extra), 'the COPY came back');
    t.equal(await fileInImage(check, derived, 'data/random.bin'), randomDigest, 'and so did the base file');
    const catalog = (await (await fetch(`${berth.url}/v2/_catalog`)).json()) as { repositories: string[] };
    t.same(catalog.repositories, ['e2e/base', 'e2e/copy', 'e2e/derived', 'e2e/docker'], 'the catalog lists every pushed repository');
  });
});
