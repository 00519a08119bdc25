import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './ports.js';

/**
 * Child-process plumbing shared by the helpers that start daemons (berth, docker-registry, redis-server,
 * containerd): stopping them, waiting until they answer, and retrying on another free port. Free of tap imports so
 * the bench scripts can use it too.
 */

/** Kept although it starts with AWS_: `npm test` sets it so the AWS SDK's Node-version warning stays out of test output. */
const KEEP = 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED';

/** The environment without AWS_* (this machine sets AWS_CA_BUNDLE), REGISTRY_* and BERTH_CONFIG, plus `extra`. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => k === KEEP || (!k.startsWith('AWS_') && !k.startsWith('REGISTRY_') && k !== 'BERTH_CONFIG')),
  );
  return { ...base, ...extra };
}

/**
 * `[command, args]` that run `node <args>` as a plain node process, as users run berth. Under tap every child process
 * gets tap's process-tracking loader (@tapjs/processinfo hooks spawn and adds it to NODE_OPTIONS), which costs each
 * berth process ~0.4 s of CPU to start and hooks every module it loads. `env NODE_OPTIONS=...` sets NODE_OPTIONS
 * without tap's entries (other options, e.g. a bench run's, are kept) after the hook ran; env execs node, so the
 * process id stays the one spawn returned.
 */
export function plainNode(args: string[]): [string, string[]] {
  const options = (process.env.NODE_OPTIONS ?? '')
    .split(' ')
    .filter((o) => o !== '' && !o.includes('@tapjs/'))
    .join(' ');
  return ['/usr/bin/env', [`NODE_OPTIONS=${options}`, process.execPath, ...args]];
}

/** True once `child` has exited or was killed by a signal. */
export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Stops `child`: SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited (at once if it already has). */
export async function stopProcess(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (hasExited(child)) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  try {
    await exited;
  } finally {
    clearTimeout(killer);
  }
}

/** Options for {@link waitForChild}. */
export interface WaitOptions {
  timeoutMs: number;
  /** Pause between checks; default 50 ms. */
  intervalMs?: number;
  /** Pause before the first check too (for daemons that cannot answer at once); default false. */
  sleepFirst?: boolean;
}

/**
 * Polls `check` until it resolves true (`'ready'`), `child` exits (`'exited'`) or `timeoutMs` passes (`'timeout'`).
 * Rejects with the spawn error if the binary could not be started. Call it right after `spawn`, before awaiting
 * anything else, so the spawn error is caught.
 */
export async function waitForChild(
  child: ChildProcess,
  check: () => Promise<boolean>,
  options: WaitOptions,
): Promise<'ready' | 'exited' | 'timeout'> {
  let spawnError: Error | undefined;
  child.on('error', (err: Error) => (spawnError = err));
  const interval = options.intervalMs ?? 50;
  const deadline = Date.now() + options.timeoutMs;
  if (options.sleepFirst) await sleep(interval);
  for (;;) {
    if (spawnError !== undefined) throw spawnError;
    if (hasExited(child)) return 'exited';
    if (await check()) return 'ready';
    if (Date.now() >= deadline) return 'timeout';
    await sleep(interval);
  }
}

/**
 * Runs `start` on a fresh free 127.0.0.1 port until it succeeds. A free port can be taken by another process
 * between {@link freePort} and the daemon binding it, so a failed start is retried on another port, up to `attempts`
 * times in all, as long as `retryIf(err)` says the failure may be that (default: any failure).
 */
export async function onFreePort<T>(
  start: (port: number, attempt: number) => Promise<T>,
  options: { attempts?: number; retryIf?: (err: unknown) => boolean } = {},
): Promise<T> {
  const attempts = options.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    try {
      return await start(await freePort(), attempt);
    } catch (err) {
      if (attempt >= attempts || !(options.retryIf?.(err) ?? true)) throw err;
    }
  }
}

/**
 * Resolves true once `GET url+path` answers one of `accept` (within 1 s per try), false otherwise; the body is
 * drained so keep-alive sockets are freed.
 */
export async function answersHttp(url: string, path = '/v2/', accept: number[] = [200]): Promise<boolean> {
  try {
    const res = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return accept.includes(res.status);
  } catch {
    return false;
  }
}
