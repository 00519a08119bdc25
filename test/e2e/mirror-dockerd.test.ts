import t from 'tap';
import { startBerth } from '../helpers/berth.js';
import { captureAccessLog } from '../helpers/containers.js';
import { makeRunnableImageLayout } from '../helpers/cri.js';
import { startDockerRegistry } from '../helpers/docker-registry.js';
import { skipUnlessDockerd, startDockerd } from '../helpers/dockerd.js';
import { startHubMirror, upstreamDigest } from '../helpers/hub-mirror.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';
import { accessLog, eventually } from '../proxy/helpers.js';

/**
 * Issue 5 with the Docker daemon (Debian's docker.io 20.10): `"registry-mirrors": ["http://<berth>"]` in
 * daemon.json, and `docker pull <img>:1` of a plain Docker Hub name goes to berth in the daemon's mirror shape
 * (`GET /v2/library/<img>/manifests/1`, no `ns`). berth mirrors "Docker Hub" (Debian's docker-registry behind a
 * token server); the pulled image's RepoDigests carry the upstream's manifest digest.
 *
 * The daemon is private: its own data-root, exec-root, pidfile and unix socket in a temp dir, `vfs` storage, no
 * bridge and no iptables, and HTTP(S) proxies pointing at a closed port so its Docker Hub fallback (taken on any
 * mirror error) cannot leave the machine.
 */

/** The digest the hub itself serves for `repo:tag` (HEAD with an anonymous token from its token server). */
t.test('dockerd pulls Docker Hub images through berth as its registry mirror', { skip: skipUnlessDockerd() }, async (t) => {
  const { hub, image, berth, log } = await startHubMirror(t, 'berth-e2e-dockerd');
  t.equal(await upstreamDigest(hub, 'library/bbox', '1'), image.manifest, 'the upstream serves the seeded manifest digest');
  const dockerd = await startDockerd(t, { registryMirrors: [berth.url] });
  const upstreamMark = accessLog(hub.registry).length;

  const pulled = await dockerd.docker(['pull', 'bbox:1']).catch((err: unknown) => err);
  t.notOk(pulled instanceof Error, 'docker pull bbox:1 succeeds', {
    error: String(pulled),
    accessLog: log.dump(),
    daemon: dockerd.log().slice(-5000),
  });
  const seen = log.entries();
  // The daemon's mirror shape: Docker Hub's name with library/ and no ns query. Docker 20.10 resolves the tag with
  // HEAD (it does not count against Docker Hub's pull limit), then GETs the manifest by digest.
  t.ok(
    seen.some((e) => e.method === 'HEAD' && e.url === '/v2/library/bbox/manifests/1' && e.status === 200),
    "berth answered the daemon's HEAD /v2/library/bbox/manifests/1",
    { accessLog: log.dump() },
  );
  t.ok(
    seen.some((e) => e.method === 'GET' && e.url === `/v2/library/bbox/manifests/${image.manifest}` && e.status === 200),
    'and its GET of the manifest by digest',
    { accessLog: log.dump() },
  );
  t.notOk(
    seen.some((e) => e.url.includes('ns=')),
    'the daemon sends no ns',
    { accessLog: log.dump() },
  );
  // The layer: the daemon has no way to the "hub" but berth (it knows it only as docker.io, behind a proxy that goes
  // nowhere), so the hub serving the layer to berth and the pull succeeding show it came through berth. berth's own
  // access line for that GET is not asserted on this cold pull: under the whole suite it was missing in 3 of 8 runs
  // (the daemon had the image; berth's log showed the config's GET only, no warning), which is left open in the
  // issue's note. The warm pull below asserts berth's line for the layer.
  t.ok(
    await eventually(() =>
      accessLog(hub.registry)
        .slice(upstreamMark)
        .some((e) => e.method === 'GET' && e.path === `/v2/library/bbox/blobs/${image.layer}` && e.status === 200),
    ),
    'berth fetched the layer from the upstream',
    { layer: image.layer, accessLog: log.dump(), berth: log.warnings() },
  );
  t.ok(
    accessLog(hub.registry)
      .slice(upstreamMark)
      .some((e) => e.method === 'GET' && e.path === '/v2/library/bbox/manifests/1' && e.status === 200),
    'berth fetched the manifest from the upstream',
  );

  const inspect = await dockerd.docker(['image', 'inspect', '--format', '{{json .RepoDigests}} {{.Id}}', 'bbox:1']);
  const [digests, id] = inspect.stdout.trim().split(' ');
  t.same(JSON.parse(digests ?? '[]'), [`bbox@${image.manifest}`], 'RepoDigests: the upstream manifest digest');
  t.equal(id, image.config, 'the image ID is the upstream config digest');

  // The slow link is down: the daemon pulls again (after removing the image) from berth's cache.
  await hub.registry.stop();
  await dockerd.docker(['rmi', 'bbox:1']);
  const mark = log.entries().length;
  const again = await dockerd.docker(['pull', 'bbox:1']).catch((err: unknown) => err);
  t.notOk(again instanceof Error, 'with the upstream stopped, docker pull bbox:1 still succeeds', { error: String(again), accessLog: log.dump() });
  t.ok(
    log
      .entries()
      .slice(mark)
      .some((e) => e.method === 'GET' && e.url === `/v2/library/bbox/blobs/${image.layer}` && e.status === 200),
    'the layer was served again by berth',
    { accessLog: log.dump() },
  );
  const after = await dockerd.docker(['image', 'inspect', '--format', '{{json .RepoDigests}}', 'bbox:1']);
  t.same(JSON.parse(after.stdout.trim()), [`bbox@${image.manifest}`], 'same RepoDigests');
});

/**
 * Issue 15, chained mirrors with the Docker daemon: origin (Distribution) ← a regional mirror of it (Distribution
 * with `proxy.remoteurl`) ← berth (registry:2's single-upstream form, `proxy.remoteurl` = the regional mirror) ←
 * dockerd with berth in `registry-mirrors`. `docker pull chainbox:1` is Docker Hub's `library/chainbox:1` to the
 * daemon; every hop must see it, and the image must be the origin's.
 */
t.test('dockerd pulls through berth whose upstream is itself a mirror', { skip: skipUnlessDockerd() }, async (t) => {
  const origin = await startDockerRegistry(t, { rootDirectory: await tempDir(t, 'berth-dchain-origin-') });
  const regional = await startDockerRegistry(t, {
    rootDirectory: await tempDir(t, 'berth-dchain-mid-'),
    extraConfig: { proxy: { remoteurl: origin.url } },
  });
  const src = await tempDir(t, 'berth-dchain-src-');
  const image = await makeRunnableImageLayout(src, { tag: 'chainbox', fileSize: 300 * 1024 });
  await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:chainbox`, dockerRef(origin.url, 'library/chainbox', '1')]);
  const log = captureAccessLog();
  const berth = await startBerth(
    t,
    { log: { level: 'info', accesslog: { disabled: false } }, proxy: { remoteurl: regional.url, tagttl: '1h' } },
    { logger: log.logger },
  );
  const dockerd = await startDockerd(t, { registryMirrors: [berth.url] });
  const regionalMark = accessLog(regional).length;
  const originMark = accessLog(origin).length;

  const pulled = await dockerd.docker(['pull', 'chainbox:1']).catch((err: unknown) => err);
  t.notOk(pulled instanceof Error, 'docker pull chainbox:1 succeeds', {
    error: String(pulled),
    accessLog: log.dump(),
    daemon: dockerd.log().slice(-5000),
  });
  const seen = log.entries();
  t.ok(
    seen.some((e) => e.method === 'GET' && e.url === `/v2/library/chainbox/manifests/${image.manifest}` && e.status === 200),
    'berth served the manifest to the daemon (docker.io/library/chainbox)',
    { accessLog: log.dump() },
  );
  // The layer reached the daemon through berth (its only way to "Docker Hub"): the regional mirror served it to berth
  // (below). berth's own access line for this cold GET is not asserted, as in the test above.
  const viaRegional = accessLog(regional).slice(regionalMark);
  t.ok(
    viaRegional.some((e) => e.method === 'GET' && e.path.startsWith('/v2/library/chainbox/manifests/') && e.status === 200),
    'berth fetched the manifest from the regional mirror',
    { regional: viaRegional },
  );
  t.ok(
    viaRegional.some((e) => e.method === 'GET' && e.path === `/v2/library/chainbox/blobs/${image.layer}` && e.status === 200),
    'and the layer',
    { regional: viaRegional },
  );
  t.ok(
    accessLog(origin)
      .slice(originMark)
      .some((e) => e.method === 'GET' && e.path === `/v2/library/chainbox/blobs/${image.layer}` && e.status === 200),
    'which got it from the origin',
  );

  const inspect = await dockerd.docker(['image', 'inspect', '--format', '{{json .RepoDigests}} {{.Id}}', 'chainbox:1']);
  const [digests, id] = inspect.stdout.trim().split(' ');
  t.same(JSON.parse(digests ?? '[]'), [`chainbox@${image.manifest}`], "RepoDigests: the origin's manifest digest");
  t.equal(id, image.config, "the image ID is the origin's config digest");
});
