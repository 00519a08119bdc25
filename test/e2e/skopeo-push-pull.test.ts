import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { startBerth } from '../helpers/berth.js';
import { blobPath, layoutTagDigest, makeImageLayout, OciMediaTypes, walkBlobs, type GeneratedLayout } from '../helpers/oci-layout.js';
import { fileDigest } from '../helpers/digest.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';

/**
 * End to end with a real client: skopeo pushes OCI images and a two-platform index into berth and pulls them back
 * (issue 2: "pushes a multi-layer image and a two-platform index with skopeo (`--preserve-digests`) and pulls them
 * back with identical digests, lists tags and deletes").
 */

const MiB = 1 << 20;
const REPO = 'e2e/app';
const MANIFEST_ACCEPT = [
  OciMediaTypes.manifest,
  OciMediaTypes.index,
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

/** Asserts that the layout at `dst` holds `tag` pointing at `expected.digest` with every blob intact and identical. */
async function assertPulledIdentical(t: Test, dst: string, expected: GeneratedLayout, src: string): Promise<void> {
  t.equal(await layoutTagDigest(dst, expected.tag), expected.digest, `${expected.tag}: pulled layout tags the same digest`);
  const pulled = await walkBlobs(dst, expected.digest, expected.mediaType);
  t.same(
    pulled.map((b) => b.digest),
    [...expected.blobs].sort(),
    `${expected.tag}: the pulled image consists of exactly the pushed blobs`,
  );
  for (const blob of pulled) {
    t.equal(blob.actual, blob.digest, `${expected.tag}: pulled blob ${blob.digest} hashes to its digest`);
    t.equal(await fileDigest(blobPath(src, blob.digest)), blob.actual, `${expected.tag}: ${blob.digest} identical to the source`);
  }
}

t.test('skopeo push and pull through berth', async (t) => {
  const berth = await startBerth(t, {});
  const src = await tempDir(t, 'berth-e2e-src-');
  const host = (repo: string, ref: string) => dockerRef(berth.url, repo, ref);

  const single = await makeImageLayout(src, { layers: [64 * 1024, 20 * MiB, 3 * MiB + 17], tag: 'v1' });
  const multi = await makeImageLayout(src, {
    layers: [512 * 1024, 1000],
    tag: 'multi',
    gzip: true,
    platforms: [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
    ],
  });

  await t.test('a three-layer image pushed with --preserve-digests comes back identical', async (t) => {
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:v1`, host(REPO, 'v1')]);
    const head = await fetch(`${berth.url}/v2/${REPO}/manifests/v1`, { method: 'HEAD', headers: { Accept: MANIFEST_ACCEPT } });
    t.equal(head.status, 200);
    t.equal(head.headers.get('docker-content-digest'), single.digest, 'the tag resolves to the pushed manifest digest');
    t.equal(head.headers.get('content-type'), OciMediaTypes.manifest);
    for (const layer of single.images[0]?.layers ?? []) {
      const res = await fetch(`${berth.url}/v2/${REPO}/blobs/${layer}`, { method: 'HEAD' });
      t.equal(res.status, 200, `layer ${layer} is in the repository`);
    }

    const dst = await tempDir(t, 'berth-e2e-dst-');
    await skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', host(REPO, 'v1'), `oci:${dst}:v1`]);
    await assertPulledIdentical(t, dst, single, src);
  });

  await t.test('a two-platform OCI index pushed with --all comes back identical', async (t) => {
    await skopeo(['copy', '--all', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:multi`, host(REPO, 'multi')]);
    const res = await fetch(`${berth.url}/v2/${REPO}/manifests/multi`, { headers: { Accept: MANIFEST_ACCEPT } });
    t.equal(res.status, 200);
    t.equal(res.headers.get('content-type'), OciMediaTypes.index);
    t.equal(res.headers.get('docker-content-digest'), multi.digest);
    t.same(Buffer.from(await res.arrayBuffer()), await readFile(blobPath(src, multi.digest)), 'index stored byte for byte');
    for (const image of multi.images) {
      const m = await fetch(`${berth.url}/v2/${REPO}/manifests/${image.manifest}`, { method: 'HEAD', headers: { Accept: MANIFEST_ACCEPT } });
      t.equal(m.status, 200, `platform manifest ${image.platform?.architecture} present by digest`);
    }

    const dst = await tempDir(t, 'berth-e2e-dst-');
    await skopeo(['copy', '--all', '--preserve-digests', '--src-tls-verify=false', host(REPO, 'multi'), `oci:${dst}:multi`]);
    await assertPulledIdentical(t, dst, multi, src);
  });

  await t.test('--format v2s2 --all: a Docker manifest list round trip', async (t) => {
    await skopeo(['copy', '--all', '--format', 'v2s2', '--dest-tls-verify=false', `oci:${src}:multi`, host(REPO, 'v2s2')]);
    const raw = await skopeo(['inspect', '--raw', '--tls-verify=false', host(REPO, 'v2s2')]);
    const list = JSON.parse(raw) as { mediaType: string; manifests: { mediaType: string; digest: string; platform: { architecture: string } }[] };
    t.equal(list.mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json', 'stored as a Docker manifest list');
    t.same(
      list.manifests.map((m) => [m.mediaType, m.platform.architecture]),
      [
        ['application/vnd.docker.distribution.manifest.v2+json', 'amd64'],
        ['application/vnd.docker.distribution.manifest.v2+json', 'arm64'],
      ],
    );
    const head = await fetch(`${berth.url}/v2/${REPO}/manifests/v2s2`, { method: 'HEAD', headers: { Accept: MANIFEST_ACCEPT } });
    t.equal(head.headers.get('content-type'), 'application/vnd.docker.distribution.manifest.list.v2+json');
    const listDigest = head.headers.get('docker-content-digest') ?? '';

    // Pull into a `dir:` directory (which keeps Docker media types): the list as manifest.json, each platform manifest
    // as <hex>.manifest.json, blobs as <hex>.
    const dst = await tempDir(t, 'berth-e2e-dir-');
    const out = join(dst, 'image');
    await skopeo(['copy', '--all', '--preserve-digests', '--src-tls-verify=false', host(REPO, 'v2s2'), `dir:${out}`]);
    t.equal(await fileDigest(join(out, 'manifest.json')), listDigest, 'pulled manifest list has the digest berth reported');
    t.equal(await readFile(join(out, 'manifest.json'), 'utf8'), raw, 'pulled list is byte-identical to inspect --raw');
    const pathOf = (dir: string, digest: string): string => {
      if (digest === listDigest) return join(dir, 'manifest.json');
      const hex = digest.split(':')[1] ?? '';
      return existsSync(join(dir, `${hex}.manifest.json`)) ? join(dir, `${hex}.manifest.json`) : join(dir, hex);
    };
    const pulled = await walkBlobs(out, listDigest, list.mediaType, pathOf);
    for (const blob of pulled) t.equal(blob.actual, blob.digest, `pulled ${blob.mediaType} ${blob.digest} hashes to its digest`);
    // Gzip layers and configs carry over unchanged from OCI to schema2; only the manifests are rewritten.
    const sourceLayersAndConfigs = multi.images.flatMap((i) => [...i.layers, i.config]).sort();
    t.same(
      pulled.filter((b) => !b.mediaType.includes('manifest')).map((b) => b.digest),
      sourceLayersAndConfigs,
      'layers and configs are the pushed ones',
    );
    t.equal(pulled.filter((b) => b.mediaType === 'application/vnd.docker.distribution.manifest.v2+json').length, 2);
  });

  await t.test('inspect --raw returns the pushed manifest byte for byte', async (t) => {
    const rawSingle = await skopeo(['inspect', '--raw', '--tls-verify=false', host(REPO, 'v1')]);
    t.equal(rawSingle, await readFile(blobPath(src, single.digest), 'utf8'));
    const rawIndex = await skopeo(['inspect', '--raw', '--tls-verify=false', host(REPO, 'multi')]);
    t.equal(rawIndex, await readFile(blobPath(src, multi.digest), 'utf8'));
    const byDigest = await skopeo(['inspect', '--raw', '--tls-verify=false', host(REPO, single.digest)]);
    t.equal(byDigest, rawSingle, 'by digest too');
  });

  await t.test('list-tags shows every tag, sorted', async (t) => {
    // A second tag on the single image, pushed last but sorting first.
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:v1`, host(REPO, 'latest')]);
    const listed = JSON.parse(await skopeo(['list-tags', '--tls-verify=false', `docker://${berth.url.slice(7)}/${REPO}`])) as { Tags: string[] };
    t.same(listed.Tags, ['latest', 'multi', 'v1', 'v2s2']);
    const res = await fetch(`${berth.url}/v2/${REPO}/tags/list`);
    t.same(await res.json(), { name: REPO, tags: ['latest', 'multi', 'v1', 'v2s2'] });
  });

  await t.test('skopeo delete removes the manifest and every tag pointing at it', async (t) => {
    await skopeo(['delete', '--tls-verify=false', host(REPO, 'latest')]);
    for (const ref of ['latest', 'v1', single.digest]) {
      const res = await fetch(`${berth.url}/v2/${REPO}/manifests/${ref}`, { headers: { Accept: MANIFEST_ACCEPT } });
      t.equal(res.status, 404, `GET manifest ${ref} after delete`);
      const body = (await res.json()) as { errors: { code: string }[] };
      t.equal(body.errors[0]?.code, 'MANIFEST_UNKNOWN');
    }
    const listed = JSON.parse(await skopeo(['list-tags', '--tls-verify=false', `docker://${berth.url.slice(7)}/${REPO}`])) as { Tags: string[] };
    t.same(listed.Tags, ['multi', 'v2s2'], 'deleted tags are gone from list-tags');
    const still = await fetch(`${berth.url}/v2/${REPO}/manifests/multi`, { method: 'HEAD', headers: { Accept: MANIFEST_ACCEPT } });
    t.equal(still.status, 200, 'other manifests stay');
    await t.rejects(
      skopeo(['inspect', '--raw', '--tls-verify=false', host(REPO, 'v1')]),
      /manifest unknown|not found|404/i,
      'skopeo cannot inspect the deleted tag',
    );
  });
});
