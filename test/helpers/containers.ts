import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import type { Teardownable } from './berth.js';
import { stopProcess, waitForChild } from './process.js';

/**
 * Real container clients for end-to-end tests: podman and buildah (Debian's podman 4.3 / buildah 1.28) with
 * throw-away storage and configuration, and a private containerd daemon (1.6) driven with `ctr`.
 *
 * Nothing of the machine's or the user's container configuration takes part: HOME, XDG_*, the auth file,
 * registries.conf, containers.conf, storage.conf and the signature policy all live in a temp dir per environment,
 * storage is `vfs` (works as root anywhere, no mounts), and proxies point at a closed port so no client reaches
 * the internet.
 */

/** Where the Debian packages put the clients. */
export const ContainerBinaries = {
  podman: '/usr/bin/podman',
  buildah: '/usr/bin/buildah',
  containerd: '/usr/bin/containerd',
  ctr: '/usr/bin/ctr',
} as const;

/** The names of `names` whose binary is not installed (empty when all are), for a tap `skip` message. */
export function missingClients(...names: Array<keyof typeof ContainerBinaries>): Array<keyof typeof ContainerBinaries> {
  return names.filter((name) => !existsSync(ContainerBinaries[name]));
}

/** A tap skip reason when a client binary is missing, else false. */
export function skipUnlessInstalled(...names: Array<keyof typeof ContainerBinaries>): string | false {
  const missing = missingClients(...names);
  return missing.length === 0 ? false : `not installed: ${missing.map((n) => ContainerBinaries[n]).join(', ')}`;
}

/** Options for one client run. */
export interface RunOptions {
  /** Written to the client's stdin (then closed), e.g. for `--password-stdin`. */
  stdin?: string;
  /** Kill the client (SIGKILL) and fail after this long; default 60 s. */
  timeoutMs?: number;
}

/** What a finished client run printed. */
export interface RunResult {
  stdout: string;
  stderr: string;
}

/** A client run that exited non-zero (or was killed): carries the command line, status and output. */
export class ClientError extends Error {
  constructor(
    message: string,
    readonly stdout: string,
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(message);
    this.name = 'ClientError';
  }
}

const DEFAULT_TIMEOUT_MS = 60_000;

/** Proxies that lead nowhere, so a client that tried the internet would fail at once instead of reaching it. */
const NO_INTERNET: NodeJS.ProcessEnv = {
  HTTP_PROXY: 'http://127.0.0.1:1',
  HTTPS_PROXY: 'http://127.0.0.1:1',
  http_proxy: 'http://127.0.0.1:1',
  https_proxy: 'http://127.0.0.1:1',
  NO_PROXY: '127.0.0.1,localhost,::1',
  no_proxy: '127.0.0.1,localhost,::1',
};

/**
 * The environment for child processes without AWS_* (this machine sets AWS_CA_BUNDLE), REGISTRY_* (berth's and the
 * containers tools' own overrides), CONTAINERS_* / CONTAINERD_* / proxy variables: the caller sets what it means.
 */
function baseEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) =>
        !name.startsWith('AWS_') &&
        !name.startsWith('REGISTRY_') &&
        !name.startsWith('CONTAINERS_') &&
        !name.startsWith('CONTAINERD_') &&
        !/^(https?|no|all)_proxy$/i.test(name),
    ),
  );
}

/** Runs `bin args` and resolves with its output; rejects with a {@link ClientError} naming the command and stderr. */
export async function run(bin: string, args: string[], env: NodeJS.ProcessEnv, options: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const child = spawn(bin, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdin.on('error', () => undefined); // a client that exits without reading stdin
  child.stdin.end(options.stdin ?? '');
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  try {
    const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
    if (code === 0) return { stdout, stderr };
    const how = killed ? `killed after ${timeoutMs} ms` : signal ? `signal ${signal}` : `exit ${String(code)}`;
    throw new ClientError(`${bin} ${args.join(' ')}: ${how}\n${stderr}${stdout}`, stdout, stderr, code);
  } finally {
    clearTimeout(timer);
  }
}

/** A podman/buildah environment: private storage, configuration and credentials in one temp dir. */
export interface ContainersEnv {
  /** The temp dir holding everything (removed at teardown). */
  dir: string;
  /** The auth file (`REGISTRY_AUTH_FILE`) `podman login` writes and every command reads. */
  authFile: string;
  /** The signature policy that accepts everything. */
  policy: string;
  /** `--signature-policy <policy> --tls-verify=false`: for commands that talk to berth over plain HTTP. */
  remoteFlags: string[];
  /** The environment the clients run with. */
  env: NodeJS.ProcessEnv;
  /** `podman --root ... --runroot ... --storage-driver vfs --cgroup-manager cgroupfs --events-backend file <args>`. */
  podman(args: string[], options?: RunOptions): Promise<RunResult>;
  /** `buildah --root ... --runroot ... --storage-driver vfs <args>`. */
  buildah(args: string[], options?: RunOptions): Promise<RunResult>;
}

/**
 * Creates a fresh podman/buildah environment (its own image storage, so a pull really goes to the registry),
 * removed at teardown. podman and buildah in one environment share the storage, as they do on a workstation.
 */
export async function containersEnv(t: Teardownable): Promise<ContainersEnv> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-containers-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const home = join(dir, 'home');
  const configHome = join(home, '.config');
  const storage = join(dir, 'storage');
  const runroot = join(dir, 'run');
  const runtimeDir = join(dir, 'xdg-run');
  const libpodTmp = join(dir, 'libpod-tmp');
  await mkdir(join(configHome, 'containers'), { recursive: true });
  await mkdir(runtimeDir, { mode: 0o700 });
  await mkdir(libpodTmp);
  await mkdir(join(dir, 'tmp'));
  const policy = join(dir, 'policy.json');
  const policyJson = JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] });
  await writeFile(policy, policyJson);
  // containers/image reads $XDG_CONFIG_HOME/containers/policy.json before /etc for commands without the flag.
  await writeFile(join(configHome, 'containers', 'policy.json'), policyJson);
  const registriesConf = join(dir, 'registries.conf');
  await writeFile(registriesConf, 'unqualified-search-registries = []\n');
  const containersConf = join(dir, 'containers.conf');
  await writeFile(containersConf, '');
  const storageConf = join(dir, 'storage.conf');
  await writeFile(storageConf, `[storage]\ndriver = "vfs"\ngraphroot = ${JSON.stringify(storage)}\nrunroot = ${JSON.stringify(runroot)}\n`);
  const authFile = join(dir, 'auth.json');
  // buildah refuses to start when REGISTRY_AUTH_FILE names a file that does not exist.
  await writeFile(authFile, JSON.stringify({ auths: {} }));
  const env: NodeJS.ProcessEnv = {
    ...baseEnv(),
    ...NO_INTERNET,
    HOME: home,
    XDG_RUNTIME_DIR: runtimeDir,
    XDG_CONFIG_HOME: configHome,
    XDG_DATA_HOME: join(home, '.local', 'share'),
    XDG_CACHE_HOME: join(home, '.cache'),
    REGISTRY_AUTH_FILE: authFile,
    CONTAINERS_REGISTRIES_CONF: registriesConf,
    CONTAINERS_CONF: containersConf,
    CONTAINERS_STORAGE_CONF: storageConf,
    TMPDIR: join(dir, 'tmp'),
  };
  const storageFlags = ['--root', storage, '--runroot', runroot, '--storage-driver', 'vfs'];
  const podmanFlags = [...storageFlags, '--cgroup-manager', 'cgroupfs', '--events-backend', 'file', '--tmpdir', libpodTmp];
  return {
    dir,
    authFile,
    policy,
    remoteFlags: ['--signature-policy', policy, '--tls-verify=false'],
    env,
    podman: (args, options) => run(ContainerBinaries.podman, [...podmanFlags, ...args], env, options),
    buildah: (args, options) => run(ContainerBinaries.buildah, [...storageFlags, ...args], env, options),
  };
}

/** A containerd daemon started by a test. */
export interface ContainerdProcess {
  /** The daemon's gRPC socket. */
  socket: string;
  /** Runs `ctr -a <socket> <args>` (native snapshotter, no proxies reachable). */
  ctr(args: string[], options?: RunOptions): Promise<RunResult>;
  /** Stops the daemon (SIGTERM, then SIGKILL); resolves once it has exited. Safe to call twice. */
  stop(): Promise<void>;
}

const CONTAINERD_START_TIMEOUT_MS = 15_000;

/** Options for {@link startContainerd}. */
export interface ContainerdOptions {
  /**
   * Enable the `cri` plugin (the kubelet's image and runtime services on the same socket), with the `native`
   * snapshotter, no CNI network (private empty CNI dirs) and no AppArmor/cgroup/OOM-score settings: enough to pull
   * images, not to run pods. Its images live in containerd namespace `k8s.io` (`ctr -n k8s.io ...`).
   */
  cri?: boolean;
  /** With `cri`: the plugin's registry `config_path` (`<hostsDir>/<host>/hosts.toml` per registry host). */
  hostsDir?: string;
}

/** The config.toml lines that enable and configure the CRI plugin (see {@link ContainerdOptions.cri}). */
function criConfig(dir: string, hostsDir: string | undefined): string[] {
  const q = (s: string) => JSON.stringify(s);
  const cri = '[plugins."io.containerd.grpc.v1.cri"]';
  return [
    cri,
    // Never pulled: image pulls need no sandbox; an unresolvable name keeps it off the network if something tried.
    '  sandbox_image = "pause.invalid/pause:3.6"',
    '  disable_apparmor = true',
    '  restrict_oom_score_adj = true',
    '  disable_cgroup = true',
    '  enable_selinux = false',
    '  stream_server_address = "127.0.0.1"',
    `[plugins."io.containerd.grpc.v1.cri".containerd]`,
    '  snapshotter = "native"',
    `[plugins."io.containerd.grpc.v1.cri".cni]`,
    `  bin_dir = ${q(join(dir, 'cni-bin'))}`,
    `  conf_dir = ${q(join(dir, 'cni-conf'))}`,
    `[plugins."io.containerd.grpc.v1.cri".registry]`,
    `  config_path = ${q(hostsDir ?? join(dir, 'hosts'))}`,
  ];
}

/**
 * Starts a private containerd (root, state and sockets in a temp dir; the CRI plugin off unless `options.cri`) and
 * stops it and removes its files when `t` ends. `ctr` unpacks with the `native` snapshotter, which needs no mounts.
 */
export async function startContainerd(t: Teardownable, options: ContainerdOptions = {}): Promise<ContainerdProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-containerd-'));
  const socket = join(dir, 'containerd.sock');
  const config = join(dir, 'config.toml');
  const q = (s: string) => JSON.stringify(s);
  await writeFile(
    config,
    [
      'version = 2',
      `root = ${q(join(dir, 'root'))}`,
      `state = ${q(join(dir, 'state'))}`,
      ...(options.cri ? [] : ['disabled_plugins = ["io.containerd.grpc.v1.cri"]']),
      '[grpc]',
      `  address = ${q(socket)}`,
      '[ttrpc]',
      `  address = ${q(`${socket}.ttrpc`)}`,
      '[debug]',
      '  address = ""',
      '[metrics]',
      '  address = ""',
      ...(options.cri ? criConfig(dir, options.hostsDir) : []),
      '',
    ].join('\n'),
  );
  const env: NodeJS.ProcessEnv = { ...baseEnv(), ...NO_INTERNET, CONTAINERD_SNAPSHOTTER: 'native', TMPDIR: dir };
  const child = spawn(ContainerBinaries.containerd, ['--config', config], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    // keep the tail only: containerd logs every plugin it loads
    log = (log + s).slice(-20_000);
  });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await stopProcess(child);
    await rm(dir, { recursive: true, force: true });
  };
  t.teardown(stop);
  const ctr = (args: string[], options?: RunOptions) => run(ContainerBinaries.ctr, ['-a', socket, ...args], env, options);
  const answers = async () =>
    existsSync(socket) &&
    (await ctr(['version'], { timeoutMs: 5000 }).then(
      () => true,
      () => false,
    ));
  const state = await waitForChild(child, answers, { timeoutMs: CONTAINERD_START_TIMEOUT_MS, intervalMs: 100, sleepFirst: true });
  if (state === 'exited') throw new Error(`containerd exited during start-up:\n${log}`);
  if (state === 'timeout') {
    await stop();
    throw new Error(`containerd did not answer on ${socket} within ${CONTAINERD_START_TIMEOUT_MS} ms:\n${log}`);
  }
  return { socket, ctr, stop };
}

/** `HOST:PORT` of a berth url (`http://127.0.0.1:PORT`), the form image references take. */
export function registryHost(url: string): string {
  return url.replace(/^https?:\/\//, '');
}

/** Every manifest media type a client may get, for HEAD/GET Accept headers. */
export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

/** The `Docker-Content-Digest` berth answers a HEAD of `repo:ref` with (undefined on a non-200). */
export async function headDigest(url: string, repo: string, ref: string, headers: Record<string, string> = {}): Promise<string | undefined> {
  const res = await fetch(`${url}/v2/${repo}/manifests/${ref}`, { method: 'HEAD', headers: { Accept: MANIFEST_ACCEPT, ...headers } });
  return res.status === 200 ? (res.headers.get('docker-content-digest') ?? undefined) : undefined;
}

/** One line of berth's access log (`log.accesslog`), as the app's `onResponse` hook writes it. */
export interface AccessEntry {
  method: string;
  url: string;
  status: number;
  ua?: string;
}

/** A pino logger for `startBerth(t, { log: { level: 'info', accesslog: { disabled: false } } }, { logger })`. */
export interface AccessLogCapture {
  logger: Logger;
  /** Every access-log entry so far, in order. */
  entries(): AccessEntry[];
  /** The entries as `METHOD url -> status (ua)` lines, for failure messages. */
  dump(): string;
  /** berth's other log lines at warn or above (level and message, the last 50), for failure messages. */
  warnings(): string;
}

/** Collects berth's access log in memory, so a test can assert what a real client sent and got back. */
export function captureAccessLog(): AccessLogCapture {
  const entries: AccessEntry[] = [];
  const warnings: string[] = [];
  let pending = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      pending += chunk.toString('utf8');
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        try {
          const entry = JSON.parse(line) as Partial<AccessEntry> & { msg?: string; level?: number };
          if (entry.msg === 'request' && typeof entry.method === 'string' && typeof entry.url === 'string' && typeof entry.status === 'number') {
            entries.push({ method: entry.method, url: entry.url, status: entry.status, ...(entry.ua ? { ua: entry.ua } : {}) });
          } else if ((entry.level ?? 0) >= 40) {
            warnings.push(line.slice(0, 1000));
            if (warnings.length > 50) warnings.shift();
          }
        } catch {
          // not JSON: not an access-log line
        }
      }
      done();
    },
  });
  return {
    logger: pino({ level: 'info' }, sink),
    entries: () => [...entries],
    dump: () => entries.map((e) => `${e.method} ${e.url} -> ${e.status} (${e.ua ?? '-'})`).join('\n'),
    warnings: () => warnings.join('\n'),
  };
}
