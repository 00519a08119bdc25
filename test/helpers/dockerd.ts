import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Teardownable } from './berth.js';
import { ContainerBinaries, ClientError, run, startContainerd, type RunOptions, type RunResult } from './containers.js';
import { stopProcess, waitForChild } from './process.js';

/**
 * A private Docker daemon (Debian's docker.io 20.10) for end-to-end tests, driven with the docker CLI.
 *
 * Nothing of the machine's Docker takes part: the daemon has its own data-root, exec-root, pidfile and unix socket
 * in a temp dir, runs on its own containerd (started here unless the caller passes one; a system containerd at
 * /run/containerd, as on CI runners with Docker, is never used), stores images with `vfs` (no mounts), has no
 * bridge and no iptables rules, and its HTTP(S) proxies point at a closed port so nothing it does (a Docker Hub
 * fallback, say) can leave the machine. The CLI has its own DOCKER_CONFIG, so `docker login` credentials stay in
 * the temp dir too.
 */

/** Where Debian's docker.io puts the daemon and the CLI. */
export const DockerBinaries = {
  dockerd: '/usr/sbin/dockerd',
  docker: '/usr/bin/docker',
} as const;

/** A tap skip reason when dockerd, the docker CLI or containerd is not installed, else false. */
export function skipUnlessDockerd(): string | false {
  const missing = [DockerBinaries.dockerd, DockerBinaries.docker, ContainerBinaries.containerd].filter((bin) => !existsSync(bin));
  return missing.length === 0 ? false : `not installed: ${missing.join(', ')}`;
}

/** Options for {@link startDockerd}. */
export interface DockerdOptions {
  /** daemon.json `registry-mirrors` (e.g. `[berth.url]`): where the daemon pulls Docker Hub images from. */
  registryMirrors?: string[];
  /** daemon.json `insecure-registries` (127.0.0.0/8 is insecure already by Docker's default). */
  insecureRegistries?: string[];
  /** An already running containerd's socket; default: a private one started (and stopped) here. */
  containerdSocket?: string;
}

/** A running private dockerd. */
export interface Dockerd {
  /** The daemon's unix socket. */
  socket: string;
  /** The CLI's private DOCKER_CONFIG directory (`config.json` holds what `docker login` stored). */
  configDir: string;
  /**
   * Runs the docker CLI against this daemon; resolves with its output, rejects with a {@link ClientError} (exit
   * status, stdout, stderr) when it exits non-zero. Default timeout 45 s.
   */
  docker(args: string[], options?: RunOptions): Promise<RunResult>;
  /** The tail of the daemon's log, for failure messages. */
  log(): string;
}

const START_TIMEOUT_MS = 20_000;
const CLI_TIMEOUT_MS = 45_000;

/** The environment without AWS_*, REGISTRY_*, DOCKER_* and proxy variables: the caller sets what it means. */
function dockerEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) => !name.startsWith('AWS_') && !name.startsWith('REGISTRY_') && !name.startsWith('DOCKER_') && !/^(https?|no|all)_proxy$/i.test(name),
    ),
  );
  return { ...base, ...extra };
}

/**
 * Starts a private dockerd (see the module comment) and waits until `docker version` answers on its socket; the
 * daemon is stopped (SIGTERM, SIGKILL after 10 s: it stops its containers first) and its files removed at teardown.
 */
export async function startDockerd(t: Teardownable, options: DockerdOptions = {}): Promise<Dockerd> {
  // Ours is stopped after the daemon (its stop is idempotent, so its own teardown may run first or again).
  const containerd = options.containerdSocket === undefined ? await startContainerd(t) : undefined;
  const containerdSocket = options.containerdSocket ?? containerd?.socket;
  const dir = await mkdtemp(join(tmpdir(), 'berth-dockerd-'));
  const socket = join(dir, 'docker.sock');
  const configDir = join(dir, 'client');
  await mkdir(configDir);
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
      'registry-mirrors': options.registryMirrors ?? [],
      'insecure-registries': options.insecureRegistries ?? [],
    }),
  );
  const noInternet = {
    HTTP_PROXY: 'http://127.0.0.1:1',
    HTTPS_PROXY: 'http://127.0.0.1:1',
    NO_PROXY: '127.0.0.1,localhost,::1',
  };
  const child = spawn(DockerBinaries.dockerd, ['--config-file', configFile], {
    env: dockerEnv({ ...noInternet, TMPDIR: dir }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  for (const stream of [child.stdout, child.stderr]) stream?.setEncoding('utf8').on('data', (s: string) => (log = (log + s).slice(-50_000)));
  t.teardown(async () => {
    await stopProcess(child, 10_000);
    await containerd?.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const clientEnv = dockerEnv({ DOCKER_HOST: `unix://${socket}`, DOCKER_CONFIG: configDir });
  const docker = (args: string[], runOptions: RunOptions = {}) =>
    run(DockerBinaries.docker, args, clientEnv, { timeoutMs: CLI_TIMEOUT_MS, ...runOptions });
  const answers = async (): Promise<boolean> => {
    if (!existsSync(socket)) return false;
    try {
      await docker(['version'], { timeoutMs: 5000 });
      return true;
    } catch (err) {
      if (err instanceof ClientError) return false;
      throw err;
    }
  };
  const state = await waitForChild(child, answers, { timeoutMs: START_TIMEOUT_MS, intervalMs: 100 });
  if (state === 'exited') throw new Error(`dockerd exited during start-up:\n${log}`);
  if (state === 'timeout') throw new Error(`dockerd did not answer on ${socket} within ${START_TIMEOUT_MS} ms:\n${log}`);
  return { socket, configDir, docker, log: () => log };
}
