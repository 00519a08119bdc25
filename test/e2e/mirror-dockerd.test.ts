import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { startBerth, type Teardownable } from '../helpers/berth.js';
import { captureAccessLog, ClientError, ContainerBinaries, MANIFEST_ACCEPT, run, startContainerd, type RunResult } from '../helpers/containers.js';
import { makeRunnableImageLayout } from '../helpers/cri.js';
import { tempDir } from '../helpers/ports.js';
import { accessLog, HUB_SERVICE, startTokenHub, type TokenHub } from '../proxy/helpers.js';

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

const DOCKERD = '/usr/sbin/dockerd';
const DOCKER = '/usr/bin/docker';
const START_TIMEOUT_MS = 20_000;

/** A running private dockerd. */
interface Dockerd {
  /** Runs the docker CLI against this daemon (private DOCKER_CONFIG). */
  docker(args: string[]): Promise<RunResult>;
  /** The daemon's log so far. */
  log(): string;
}

/** The environment without AWS_*, REGISTRY_*, DOCKER_* and proxy variables. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) => !name.startsWith('AWS_') && !name.startsWith('REGISTRY_') && !name.startsWith('DOCKER_') && !/^(https?|no|all)_proxy$/i.test(name),
    ),
  );
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  // dockerd stops its containers and its managed containerd first; give it time, then kill.
  const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  try {
    await exited;
  } finally {
    clearTimeout(killer);
  }
}

/**
 * Starts dockerd with `registry-mirrors: [mirror]` on the private containerd at `containerdSocket` (so a system
 * containerd at /run/containerd, as on CI runners with Docker, is never used) and waits until `docker version`
 * answers; stopped at teardown.
 */
async function startDockerd(t: Teardownable, mirror: string, containerdSocket: string): Promise<Dockerd> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-dockerd-'));
  const socket = join(dir, 'docker.sock');
  await mkdir(join(dir, 'client'));
  const configFile = join(dir, 'daemon.json');
  await writeFile(
    configFile,
    JSON.stringify({
      'data-root': join(dir, 'data'),
      'exec-root': join(dir, 'exec'),
      pidfile: join(dir, 'docker.pid'),
      hosts: [`unix://${socket}`],
      containerd: containerdSocket,
      'storage-driver': 'vfs',
      bridge: 'none',
      iptables: false,
      ip6tables: false,
      'ip-forward': false,
      'ip-masq': false,
      'exec-opts': ['native.cgroupdriver=cgroupfs'],
      'registry-mirrors': [mirror],
    }),
  );
  const noInternet = {
    HTTP_PROXY: 'http://127.0.0.1:1',
    HTTPS_PROXY: 'http://127.0.0.1:1',
    NO_PROXY: '127.0.0.1,localhost,::1',
  };
  const child = spawn(DOCKERD, ['--config-file', configFile], { env: { ...cleanEnv(), ...noInternet, TMPDIR: dir }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  for (const stream of [child.stdout, child.stderr]) stream?.setEncoding('utf8').on('data', (s: string) => (log = (log + s).slice(-50_000)));
  let spawnError: Error | undefined;
  child.on('error', (err: Error) => (spawnError = err));
  t.teardown(async () => {
    await stopChild(child);
    await rm(dir, { recursive: true, force: true });
  });
  const clientEnv = { ...cleanEnv(), DOCKER_HOST: `unix://${socket}`, DOCKER_CONFIG: join(dir, 'client') };
  const docker = (args: string[]) => run(DOCKER, args, clientEnv, { timeoutMs: 45_000 });
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (spawnError) throw spawnError;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`dockerd exited during start-up:\n${log}`);
    if (existsSync(socket)) {
      try {
        await run(DOCKER, ['version'], clientEnv, { timeoutMs: 5000 });
        break;
      } catch (err) {
        if (!(err instanceof ClientError) || Date.now() > deadline) throw err;
      }
    }
    if (Date.now() > deadline) throw new Error(`dockerd did not answer on ${socket} within ${START_TIMEOUT_MS} ms:\n${log}`);
    await sleep(100);
  }
  return { docker, log: () => log };
}

/** The digest the hub itself serves for `repo:tag` (HEAD with an anonymous token from its token server). */
async function upstreamDigest(hub: TokenHub, repo: string, tag: string): Promise<string | null> {
  const tokenRes = await fetch(`${hub.issuer.url}/auth/token?service=${HUB_SERVICE}&scope=${encodeURIComponent(`repository:${repo}:pull`)}`);
  const { token } = (await tokenRes.json()) as { token: string };
  const res = await fetch(`${hub.registry.url}/v2/${repo}/manifests/${tag}`, {
    method: 'HEAD',
    headers: { accept: MANIFEST_ACCEPT, authorization: `Bearer ${token}` },
  });
  return res.status === 200 ? res.headers.get('docker-content-digest') : null;
}

const missing = [DOCKERD, DOCKER, ContainerBinaries.containerd].filter((bin) => !existsSync(bin));

t.test('dockerd pulls Docker Hub images through berth as its registry mirror', { skip: missing.length > 0 ? `not installed: ${missing.join(', ')}` : false }, async (t) => {
  const hub = await startTokenHub(t);
  const src = await tempDir(t, 'berth-e2e-dockerd-src-');
  const image = await makeRunnableImageLayout(src, { tag: 'bbox', fileSize: 200 * 1024 });
  await hub.seed(src, 'bbox', 'library/bbox', '1');
  t.equal(await upstreamDigest(hub, 'library/bbox', '1'), image.manifest, 'the upstream serves the seeded manifest digest');

  const log = captureAccessLog();
  const berth = await startBerth(
    t,
    {
      log: { level: 'info', accesslog: { disabled: false } },
      proxy: { upstreams: [{ name: 'docker.io', url: hub.registry.url, repositories: ['library/**'], tagttl: '1h', timeout: '5s' }] },
    },
    { logger: log.logger },
  );
  const containerd = await startContainerd(t);
  const dockerd = await startDockerd(t, berth.url, containerd.socket);
  const upstreamMark = accessLog(hub.registry).length;

  const pulled = await dockerd.docker(['pull', 'bbox:1']).catch((err: unknown) => err);
  t.notOk(pulled instanceof Error, 'docker pull bbox:1 succeeds', { error: String(pulled), accessLog: log.dump(), daemon: dockerd.log().slice(-5000) });
  const seen = log.entries();
  // The daemon's mirror shape: Docker Hub's name with library/ and no ns query. Docker 20.10 resolves the tag with
  // HEAD (it does not count against Docker Hub's pull limit), then GETs the manifest by digest.
  t.ok(
    seen.some((e) => e.method === 'HEAD' && e.url === '/v2/library/bbox/manifests/1' && e.status === 200),
    'berth answered the daemon\'s HEAD /v2/library/bbox/manifests/1',
    { accessLog: log.dump() },
  );
  t.ok(
    seen.some((e) => e.method === 'GET' && e.url === `/v2/library/bbox/manifests/${image.manifest}` && e.status === 200),
    'and its GET of the manifest by digest',
    { accessLog: log.dump() },
  );
  t.notOk(seen.some((e) => e.url.includes('ns=')), 'the daemon sends no ns', { accessLog: log.dump() });
  t.ok(
    seen.some((e) => e.method === 'GET' && e.url === `/v2/library/bbox/blobs/${image.layer}` && e.status === 200),
    'the layer came from berth',
    { accessLog: log.dump() },
  );
  t.ok(
    accessLog(hub.registry).slice(upstreamMark).some((e) => e.method === 'GET' && e.path === '/v2/library/bbox/manifests/1' && e.status === 200),
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
    log.entries().slice(mark).some((e) => e.method === 'GET' && e.url === `/v2/library/bbox/blobs/${image.layer}` && e.status === 200),
    'the layer was served again by berth',
    { accessLog: log.dump() },
  );
  const after = await dockerd.docker(['image', 'inspect', '--format', '{{json .RepoDigests}}', 'bbox:1']);
  t.same(JSON.parse(after.stdout.trim()), [`bbox@${image.manifest}`], 'same RepoDigests');
});
