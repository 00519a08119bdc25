import t, { type Test } from 'tap';
import { startBerth } from '../helpers/berth.js';
import { startDockerRegistry } from '../helpers/docker-registry.js';
import { blobPath, layoutTagDigest, makeImageLayout, walkBlobs, type GeneratedLayout } from '../helpers/oci-layout.js';
import { fileDigest } from '../helpers/digest.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';

/**
 * The registry:2 storage layout round trip, both ways, with Debian's docker-registry (CNCF Distribution 2.8) and
 * skopeo. Issue 2: "The on-disk layout is Distribution's ... so berth serves a directory that registry:2 wrote, and
 * registry:2 serves one that berth wrote. Test it both ways".
 */

const MiB = 1 << 20;

/** What gets pushed: repository, tag, and the generated image. */
interface Pushed {
  repo: string;
  tag: string;
  image: GeneratedLayout;
  all: boolean;
}

/** Generates the test content into an OCI layout at `src`: a three-layer image (two tags) and a two-platform index. */
async function generate(src: string): Promise<Pushed[]> {
  const single = await makeImageLayout(src, { layers: [4096, 2 * MiB + 3, 300 * 1024], tag: 'v1' });
  const multi = await makeImageLayout(src, {
    layers: [256 * 1024, 777],
    tag: 'multi',
    gzip: true,
    platforms: [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
    ],
  });
  return [
    { repo: 'lib/alpha', tag: 'v1', image: single, all: false },
    { repo: 'lib/alpha', tag: 'stable', image: single, all: false },
    { repo: 'beta', tag: 'multi', image: multi, all: true },
  ];
}

async function pushAll(url: string, src: string, items: Pushed[]): Promise<void> {
  for (const p of items) {
    await skopeo([
      'copy',
      ...(p.all ? ['--all'] : []),
      '--preserve-digests',
      '--dest-tls-verify=false',
      `oci:${src}:${p.image.tag}`,
      dockerRef(url, p.repo, p.tag),
    ]);
  }
}

/** Pulls every pushed tag from `url` into a fresh layout and checks every digest against the source layout. */
async function pullAndCompare(t: Test, url: string, src: string, items: Pushed[], what: string): Promise<void> {
  for (const p of items) {
    const dst = await tempDir(t, 'berth-e2e-pull-');
    await skopeo([
      'copy',
      ...(p.all ? ['--all'] : []),
      '--preserve-digests',
      '--src-tls-verify=false',
      dockerRef(url, p.repo, p.tag),
      `oci:${dst}:${p.tag}`,
    ]);
    t.equal(await layoutTagDigest(dst, p.tag), p.image.digest, `${what}: ${p.repo}:${p.tag} has the pushed digest`);
    const pulled = await walkBlobs(dst, p.image.digest, p.image.mediaType);
    t.same(
      pulled.map((b) => b.digest),
      [...p.image.blobs].sort(),
      `${what}: ${p.repo}:${p.tag} has exactly the pushed blobs`,
    );
    let intact = 0;
    for (const blob of pulled) {
      if (blob.actual === blob.digest && (await fileDigest(blobPath(src, blob.digest))) === blob.actual) intact++;
      else t.fail(`${what}: ${p.repo}:${p.tag} blob ${blob.digest} differs (pulled bytes hash to ${blob.actual})`);
    }
    t.equal(intact, pulled.length, `${what}: every blob of ${p.repo}:${p.tag} is byte-identical`);
  }
}

/** The catalog and every repository's tag list, as a registry answers them. */
async function listing(url: string): Promise<{ catalog: string[]; tags: Record<string, string[]> }> {
  const res = await fetch(`${url}/v2/_catalog`);
  if (res.status !== 200) throw new Error(`GET ${url}/v2/_catalog: ${res.status} ${await res.text()}`);
  const catalog = ((await res.json()) as { repositories: string[] }).repositories;
  const tags: Record<string, string[]> = {};
  for (const repo of catalog) {
    const r = await fetch(`${url}/v2/${repo}/tags/list`);
    if (r.status !== 200) throw new Error(`GET ${url}/v2/${repo}/tags/list: ${r.status} ${await r.text()}`);
    tags[repo] = ((await r.json()) as { tags: string[] }).tags;
  }
  return { catalog, tags };
}

/** Registry:2 lists tags in directory order; berth sorts. Compare as sorted lists. */
function sortedListing(l: { catalog: string[]; tags: Record<string, string[]> }): { catalog: string[]; tags: Record<string, string[]> } {
  return { catalog: [...l.catalog].sort(), tags: Object.fromEntries(Object.entries(l.tags).map(([k, v]) => [k, [...v].sort()])) };
}

const EXPECTED = { catalog: ['beta', 'lib/alpha'], tags: { beta: ['multi'], 'lib/alpha': ['stable', 'v1'] } };

t.test('berth serves a directory docker-registry (Distribution 2.8) wrote', async (t) => {
  const src = await tempDir(t, 'berth-e2e-src-');
  const root = await tempDir(t, 'berth-e2e-root-');
  const items = await generate(src);

  const registry = await startDockerRegistry(t, { rootDirectory: root });
  await pushAll(registry.url, src, items);
  const theirs = sortedListing(await listing(registry.url));
  t.same(theirs, EXPECTED, 'docker-registry lists what was pushed');
  await registry.stop();

  const berth = await startBerth(t, { storage: { filesystem: { rootdirectory: root } } });
  t.equal(berth.root, root, 'berth uses the directory docker-registry wrote');
  const ours = await listing(berth.url);
  t.same(ours, EXPECTED, 'berth lists the same repositories and tags (sorted)');
  t.same(sortedListing(ours), theirs, 'catalog and tag lists identical to docker-registry');

  for (const p of items) {
    const res = await fetch(`${berth.url}/v2/${p.repo}/manifests/${p.tag}`, { method: 'HEAD', headers: { Accept: p.image.mediaType } });
    t.equal(res.status, 200, `HEAD ${p.repo}:${p.tag}`);
    t.equal(res.headers.get('docker-content-digest'), p.image.digest, `${p.repo}:${p.tag} resolves to the pushed digest`);
    t.equal(res.headers.get('content-type'), p.image.mediaType, `${p.repo}:${p.tag} keeps its media type`);
  }
  await pullAndCompare(t, berth.url, src, items, 'berth on docker-registry data');
});

t.test('docker-registry (Distribution 2.8) serves a directory berth wrote', async (t) => {
  const src = await tempDir(t, 'berth-e2e-src-');
  const root = await tempDir(t, 'berth-e2e-root-');
  const items = await generate(src);

  const berth = await startBerth(t, { storage: { filesystem: { rootdirectory: root } } });
  t.equal(berth.root, root);
  await pushAll(berth.url, src, items);
  const ours = await listing(berth.url);
  t.same(ours, EXPECTED, 'berth lists what was pushed');
  await berth.close();

  const registry = await startDockerRegistry(t, { rootDirectory: root });
  const theirs = await listing(registry.url);
  t.same(sortedListing(theirs), ours, 'docker-registry lists the same repositories and tags');
  for (const p of items) {
    const res = await fetch(`${registry.url}/v2/${p.repo}/manifests/${p.tag}`, { method: 'HEAD', headers: { Accept: p.image.mediaType } });
    t.equal(res.status, 200, `docker-registry: HEAD ${p.repo}:${p.tag}`);
    t.equal(res.headers.get('docker-content-digest'), p.image.digest, `docker-registry: ${p.repo}:${p.tag} digest`);
    t.equal(res.headers.get('content-type'), p.image.mediaType, `docker-registry: ${p.repo}:${p.tag} media type`);
  }
  await pullAndCompare(t, registry.url, src, items, 'docker-registry on berth data');
  const errors = registry.logs.filter((l) => /level=error/.test(l));
  t.same(errors, [], 'docker-registry logged no errors reading berth data');
});
