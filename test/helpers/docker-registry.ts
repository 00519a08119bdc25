import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import { answersHttp, cleanEnv, onFreePort, stopProcess, waitForChild } from './process.js';

/** The part of a tap test the helper needs. */
export interface Teardownable {
  teardown(fn: () => unknown): void;
}

/** Options for {@link startDockerRegistry}. */
export interface DockerRegistryOptions {
  /** `storage.filesystem.rootdirectory` (not removed by the helper: it belongs to the caller). */
  rootDirectory: string;
  /** Merged (deeply) over the generated config, e.g. `{ proxy: { remoteurl: ... } }`. */
  extraConfig?: Record<string, unknown>;
}

/** A running Debian `docker-registry` (CNCF Distribution 2.8). */
export interface DockerRegistry {
  /** `http://127.0.0.1:PORT` */
  url: string;
  port: number;
  pid: number;
  /** Every line it has logged so far (stdout and stderr, including its access log), in order. */
  logs: string[];
  /** Stops it (SIGTERM, then SIGKILL after 5 s); resolves once it has exited. Safe to call twice. */
  stop(): Promise<void>;
}

const DOCKER_REGISTRY = '/usr/bin/docker-registry';
const START_TIMEOUT_MS = 15_000;

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function merge(base: Obj, over: Obj): Obj {
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isObj(v) && isObj(b) ? merge(b, v) : v;
  }
  return out;
}

/**
 * Starts Debian's docker-registry (`docker-registry serve config.yml`) on a free 127.0.0.1 port with filesystem
 * storage at `rootDirectory`, deletes enabled and info-level logging (access log on), and waits until `GET /v2/`
 * answers 200 (401 when `auth` is configured). Stopped at teardown; its temp config dir is removed then.
 */
export async function startDockerRegistry(t: Teardownable, options: DockerRegistryOptions): Promise<DockerRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-docker-registry-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const logs: string[] = [];
  return onFreePort(
    async (port, attempt) => {
      const config = merge(
        {
          version: '0.1',
          log: { level: 'info', formatter: 'text', accesslog: { disabled: false } },
          storage: {
            filesystem: { rootdirectory: options.rootDirectory },
            delete: { enabled: true },
            maintenance: { uploadpurging: { enabled: false } },
          },
          http: { addr: `127.0.0.1:${port}`, secret: 'berth-e2e-test-secret' },
        },
        options.extraConfig ?? {},
      );
      const file = join(dir, `config-${attempt}.yml`);
      await writeFile(file, stringify(config));
      // cleanEnv: AWS_* and REGISTRY_* (which would override the config file) are left out.
      const child = spawn(DOCKER_REGISTRY, ['serve', file], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv(), cwd: dir });
      for (const stream of [child.stdout, child.stderr]) {
        if (stream) createInterface({ input: stream }).on('line', (line) => logs.push(line));
      }
      const url = `http://127.0.0.1:${port}`;
      const stop = () => stopProcess(child);
      t.teardown(stop);
      // 401: up, with `auth` configured (it challenges every request, /v2/ included).
      const up = await waitForChild(child, () => answersHttp(url, '/v2/', [200, 401]), { timeoutMs: START_TIMEOUT_MS });
      if (up === 'ready') return { url, port, pid: child.pid ?? 0, logs, stop };
      await stop();
      throw new Error(`docker-registry did not start on ${url}:\n${logs.join('\n')}`);
    },
    { retryIf: () => logs.some((l) => /address already in use/.test(l)) },
  );
}
