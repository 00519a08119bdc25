import { join } from 'node:path';
import t from 'tap';
import { skipUnlessInstalled, startContainerd, type ContainerdProcess } from '../helpers/containers.js';
import { writeHostsToml } from '../helpers/cri.js';
import { startHubMirror, upstreamDigest } from '../helpers/hub-mirror.js';
import { tempDir } from '../helpers/ports.js';
import { accessLog } from '../proxy/helpers.js';

/**
 * Issue 5 with containerd 1.6 as a Kubernetes node runs it: `hosts.toml` makes berth the mirror of `docker.io`, and
 * `ctr image pull --hosts-dir` of `docker.io/library/<img>:1` goes to berth with containerd's mirror request shape
 * (`/v2/library/<img>/manifests/1?ns=docker.io`). berth fetches from "Docker Hub" (Debian's docker-registry behind
 * a berth token server, as in test/proxy) and containerd ends up with the upstream's digests. With the upstream
 * stopped, a fresh containerd still pulls the image: berth serves it from its cache.
 */

/** The digest the hub itself serves for `repo:tag` (HEAD with an anonymous token from its token server). */
/** `ctr image ls` as REF → DIGEST. */
async function imageDigests(ctd: ContainerdProcess): Promise<Map<string, string>> {
  const refs = new Map<string, string>();
  for (const line of (await ctd.ctr(['image', 'ls'])).stdout.split('\n').slice(1)) {
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

t.test('containerd pulls Docker Hub images through berth as its docker.io mirror', { skip: skipUnlessInstalled('containerd', 'ctr') }, async (t) => {
  const { hub, image, berth, log } = await startHubMirror(t, 'berth-e2e-mirror-ctd');
  t.equal(await upstreamDigest(hub, 'library/bbox', '1'), image.manifest, 'the upstream serves the seeded manifest digest');
  const dir = await tempDir(t, 'berth-e2e-mirror-ctd-');
  const hostsDir = join(dir, 'hosts');
  // The docker.io server is a closed loopback port: whatever the mirror cannot answer fails instead of leaving the machine.
  await writeHostsToml(hostsDir, 'docker.io', { server: 'http://127.0.0.1:1', mirror: berth.url });
  const ref = 'docker.io/library/bbox:1';

  await t.test('a cold pull goes through berth to the upstream', async (t) => {
    const ctd = await startContainerd(t);
    const upstreamMark = accessLog(hub.registry).length;
    await ctd.ctr(['image', 'pull', '--hosts-dir', hostsDir, ref]);
    t.equal((await imageDigests(ctd)).get(ref), image.manifest, 'ctr image ls shows the upstream manifest digest');
    const content = await contentDigests(ctd);
    for (const d of [image.manifest, image.config, image.layer]) t.ok(content.has(d), `containerd's content store holds ${d}`);

    const seen = log.entries();
    // containerd's hosts.toml mirrors: requests to a mirror carry `ns=<the registry host>`, names keep `library/`.
    t.ok(
      seen.some((e) => (e.method === 'HEAD' || e.method === 'GET') && e.url === '/v2/library/bbox/manifests/1?ns=docker.io' && e.status === 200),
      "berth resolved the tag in containerd's mirror shape",
      { accessLog: log.dump() },
    );
    t.ok(
      seen.some((e) => e.method === 'GET' && e.url === `/v2/library/bbox/blobs/${image.layer}?ns=docker.io` && e.status === 200),
      'the layer came from berth',
      { accessLog: log.dump() },
    );
    const upstream = accessLog(hub.registry).slice(upstreamMark);
    t.ok(
      upstream.some((e) => e.status === 401),
      "the upstream demanded a token (Docker Hub's token dance)",
    );
    t.ok(
      upstream.some((e) => e.method === 'GET' && e.path === `/v2/library/bbox/blobs/${image.layer}` && e.status === 200),
      "berth fetched the layer from the upstream (without ns: it is berth's own query)",
    );
    t.notOk(
      seen.some((e) => e.url.includes('?ns=') && !e.url.includes('ns=docker.io')),
      'no other namespace asked for',
    );
  });

  await t.test("with the upstream stopped, a fresh containerd still pulls (from berth's cache)", async (t) => {
    await hub.registry.stop();
    const down = await fetch(`${hub.registry.url}/v2/`).then(
      () => 'up',
      () => 'down',
    );
    t.equal(down, 'down', 'the upstream no longer answers');
    const ctd = await startContainerd(t);
    const mark = log.entries().length;
    await ctd.ctr(['image', 'pull', '--hosts-dir', hostsDir, ref]);
    t.equal((await imageDigests(ctd)).get(ref), image.manifest, 'same manifest digest as the upstream had');
    const content = await contentDigests(ctd);
    t.ok(content.has(image.layer), 'the layer was pulled again');
    const again = log.entries().slice(mark);
    t.ok(
      again.some((e) => e.method === 'GET' && e.url === `/v2/library/bbox/blobs/${image.layer}?ns=docker.io` && e.status === 200),
      'served by berth',
      { accessLog: log.dump() },
    );
  });
});
