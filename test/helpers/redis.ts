import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import type { Test } from 'tap';
import { tempDir } from './ports.js';
import { cleanEnv, onFreePort, stopProcess, waitForChild } from './process.js';

/** A redis-server process started by a test. */
export interface RedisProcess {
  host: '127.0.0.1';
  port: number;
  /** `127.0.0.1:<port>`, the form berth's `redis.addr` takes. */
  addr: string;
  /** Process id of the server, e.g. to SIGSTOP it and see how clients cope with a Redis that does not answer. */
  pid: number;
  /** Stops the server (SIGTERM, then SIGKILL); resolves once it has exited. Safe to call twice. */
  stop(): Promise<void>;
}

const REDIS_SERVER = '/usr/bin/redis-server';
const START_TIMEOUT_MS = 10_000;

/**
 * Resolves true once the redis-server with process id `pid` answers on 127.0.0.1:`port` (its `INFO server`
 * names that pid, so another test's Redis that took the port first is not mistaken for ours), false if not (yet).
 */
async function answersAsPid(port: number, pid: number): Promise<boolean> {
  return await new Promise<boolean>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('INFO server\r\n'));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('latin1');
      if (reply.startsWith('-')) return done(false);
      const match = /\r\nprocess_id:(\d+)\r\n/.exec(reply);
      if (match) done(Number(match[1]) === pid);
    });
    socket.once('end', () => done(false));
  });
}

/** Starts redis-server on `port`; resolves once it answers (INFO, like PING but naming its pid), rejects (with its output) if it exits first. */
async function launch(port: number, dir: string): Promise<{ child: ChildProcess; port: number }> {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const state = await waitForChild(child, async () => child.pid !== undefined && (await answersAsPid(port, child.pid)), {
    timeoutMs: START_TIMEOUT_MS,
    sleepFirst: true,
  });
  if (state === 'ready') return { child, port };
  if (state === 'exited') throw new Error(`redis-server on port ${port} exited during start-up:\n${output}`);
  await stopProcess(child);
  throw new Error(`redis-server on port ${port} did not answer within ${START_TIMEOUT_MS} ms:\n${output}`);
}

/**
 * Starts a real redis-server on a free loopback port (no persistence, data dir in a temp dir) and stops it when
 * `t` ends. Pass `port` to start one on a known port again, e.g. to bring a stopped Redis back.
 */
export async function startRedis(t: Test, options: { port?: number } = {}): Promise<RedisProcess> {
  const dir = await tempDir(t, 'berth-redis-');
  // A free port can be taken between freePort() and redis binding it: onFreePort tries a few.
  const { child, port } = options.port === undefined ? await onFreePort((p) => launch(p, dir)) : await launch(options.port, dir);
  const stop = async (): Promise<void> => {
    // A SIGSTOPped server would only take SIGTERM once continued.
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGCONT');
    await stopProcess(child);
  };
  t.teardown(stop);
  return { host: '127.0.0.1', port, addr: `127.0.0.1:${port}`, pid: child.pid ?? 0, stop };
}
