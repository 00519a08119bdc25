import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Teardownable } from './berth.js';
import { answersHttp, cleanEnv, hasExited, onFreePort, plainNode, waitForChild } from './process.js';

/**
 * berth as a real process (`node dist/src/cli/main.js serve`, configured by REGISTRY_* environment variables only),
 * for the CLI and multi-process tests and the bench scripts. Free of tap imports.
 */

export { cleanEnv, plainNode } from './process.js';

/** `dist/src/cli/main.js`, the berth command line. */
export const BERTH_MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** How a berth process ended. */
export interface BerthExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** It did not exit within the grace period after SIGTERM and was SIGKILLed. */
  killed: boolean;
}

/** A running `berth serve` child process. */
export interface BerthProcess {
  /** A label for messages (`opts.name`, default `berth`). */
  name: string;
  /** `http://127.0.0.1:PORT` */
  url: string;
  port: number;
  proc: ChildProcess;
  /** Every line it printed so far (stdout and stderr), in order; empty with `inheritStderr`. */
  logs: string[];
  /** What it printed so far, as one string. */
  output(): string;
  /** Resolves once the process has exited by itself or by a signal someone sent. */
  exited: Promise<BerthExit>;
  /** SIGTERM (or `signal`), then SIGKILL after the grace period; resolves with how it ended. Safe to call twice. */
  stop(signal?: NodeJS.Signals): Promise<BerthExit>;
}

/** Options for {@link spawnBerth}. */
export interface SpawnBerthOptions {
  /** A label for messages; default `berth`. */
  name?: string;
  /** Readiness path; default `/readyz`. */
  readyPath?: string;
  /** Statuses that count as ready; default `[200]`. */
  accept?: number[];
  /** How long to wait for readiness; default 15 s. */
  timeoutMs?: number;
  /** How long `stop()` waits after SIGTERM before SIGKILL; default 5 s. */
  graceMs?: number;
  /** Listen on every interface (`:PORT`, berth's default shape) instead of 127.0.0.1; the tests still connect to 127.0.0.1. */
  allInterfaces?: boolean;
  /** Ignore stdout and pass stderr through to this process (the bench scripts) instead of capturing both. */
  inheritStderr?: boolean;
  /** Node options before the script, e.g. `['--import', MODULE_TRACE]` (module-trace.ts). */
  nodeArgs?: string[];
}

/**
 * Starts `berth serve` on a free 127.0.0.1 port (REGISTRY_HTTP_ADDR is set here) with `env` over a clean
 * environment (no AWS_*, REGISTRY_*, BERTH_CONFIG), and resolves once `readyPath` answers. If the port was taken
 * meanwhile (EADDRINUSE in its output) it tries another one. Stopped at `t`'s teardown when `t` is given; without
 * it the caller stops it.
 */
export async function spawnBerth(t: Teardownable | undefined, env: Record<string, string>, opts: SpawnBerthOptions = {}): Promise<BerthProcess> {
  const name = opts.name ?? 'berth';
  const graceMs = opts.graceMs ?? 5000;
  let portInUse = false;
  return onFreePort(
    async (port) => {
      const url = `http://127.0.0.1:${port}`;
      const proc = spawn(...plainNode([...(opts.nodeArgs ?? []), BERTH_MAIN, 'serve']), {
        stdio: opts.inheritStderr ? ['ignore', 'ignore', 'inherit'] : ['ignore', 'pipe', 'pipe'],
        env: cleanEnv({ ...env, REGISTRY_HTTP_ADDR: opts.allInterfaces ? `:${port}` : `127.0.0.1:${port}` }),
      });
      const logs: string[] = [];
      for (const s of [proc.stdout, proc.stderr]) if (s) createInterface({ input: s }).on('line', (l) => logs.push(l));
      const exited = (once(proc, 'exit') as Promise<unknown>).then(() => ({ code: proc.exitCode, signal: proc.signalCode }));
      let killed = false;
      let result: BerthExit | undefined;
      const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<BerthExit> => {
        if (result) return result;
        if (!hasExited(proc)) {
          proc.kill(signal);
          const killer = setTimeout(() => {
            killed = true;
            proc.kill('SIGKILL');
          }, graceMs);
          await exited;
          clearTimeout(killer);
        }
        result = { code: proc.exitCode, signal: proc.signalCode, killed };
        return result;
      };
      t?.teardown(() => stop());
      const state = await waitForChild(proc, () => answersHttp(url, opts.readyPath ?? '/readyz', opts.accept), {
        timeoutMs: opts.timeoutMs ?? 15_000,
      });
      if (state === 'ready') {
        return {
          name,
          url,
          port,
          proc,
          logs,
          output: () => logs.join('\n'),
          exited: exited.then((e) => ({ ...e, killed })),
          stop,
        };
      }
      await stop();
      portInUse = logs.some((l) => /EADDRINUSE/.test(l));
      throw new Error(`${name} did not become ready on ${url}:\n${logs.join('\n')}`);
    },
    { retryIf: () => portInUse },
  );
}

/**
 * Resolves once `GET url+path` answers one of `accept`; rejects if `proc` (when given) exits first or after
 * `timeoutMs` (default 15 s).
 */
export async function waitReady(
  url: string,
  path = '/v2/',
  accept: number[] = [200],
  opts: { proc?: ChildProcess; timeoutMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  while (Date.now() < deadline) {
    if (opts.proc && hasExited(opts.proc)) throw new Error(`${url} exited with ${opts.proc.exitCode ?? opts.proc.signalCode}`);
    if (await answersHttp(url, path, accept)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} did not become ready`);
}

/** What a finished berth command printed, and how it exited. */
export interface BerthRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout and stderr interleaved as they arrived. */
  output: string;
}

/**
 * Runs `node dist/src/cli/main.js <args>` to completion (for commands that exit by themselves: `--help`, `user`,
 * a `serve` with a bad config) with a clean environment plus `env`, writing `stdin` to it when given.
 */
export async function runBerth(args: string[], opts: { env?: Record<string, string>; stdin?: string } = {}): Promise<BerthRun> {
  const proc = spawn(...plainNode([BERTH_MAIN, ...args]), {
    env: cleanEnv(opts.env),
    stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let output = '';
  proc.stdout?.on('data', (c: Buffer) => {
    stdout += c.toString();
    output += c.toString();
  });
  proc.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
    output += c.toString();
  });
  const exited = once(proc, 'close') as Promise<[number | null]>;
  if (opts.stdin !== undefined) proc.stdin?.end(opts.stdin);
  const [code] = await exited;
  return { code, stdout, stderr, output };
}
