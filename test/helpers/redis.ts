import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Test } from 'tap';
import { freePort, tempDir } from './ports.js';

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

/** The environment without AWS_* (this machine sets AWS_CA_BUNDLE), for child processes. */
function childEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('AWS_')));
}

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

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
  try {
    await exited;
  } finally {
    clearTimeout(killer);
  }
}

/** Starts redis-server on `port`; resolves once it answers (INFO, like PING but naming its pid), rejects (with its output) if it exits first. */
async function launch(port: number, dir: string): Promise<ChildProcess> {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  let spawnError: Error | undefined;
  child.on('error', (err: Error) => (spawnError = err));
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    await sleep(50);
    if (spawnError !== undefined) throw spawnError;
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`redis-server on port ${port} exited during start-up:\n${output}`);
    }
    if (child.pid !== undefined && (await answersAsPid(port, child.pid))) return child;
  }
  await stopProcess(child);
  throw new Error(`redis-server on port ${port} did not answer within ${START_TIMEOUT_MS} ms:\n${output}`);
}

/**
 * Starts a real redis-server on a free loopback port (no persistence, data dir in a temp dir) and stops it when
 * `t` ends. Pass `port` to start one on a known port again, e.g. to bring a stopped Redis back.
 */
export async function startRedis(t: Test, options: { port?: number } = {}): Promise<RedisProcess> {
  const dir = await tempDir(t, 'berth-redis-');
  let child: ChildProcess | undefined;
  let port = options.port ?? 0;
  // A free port can be taken between freePort() and redis binding it: try a few.
  for (let attempt = 1; child === undefined; attempt++) {
    if (options.port === undefined) port = await freePort();
    try {
      child = await launch(port, dir);
    } catch (err) {
      if (options.port !== undefined || attempt >= 5) throw err;
    }
  }
  const running = child;
  const stop = async (): Promise<void> => {
    // A SIGSTOPped server would only take SIGTERM once continued.
    if (running.exitCode === null && running.signalCode === null) running.kill('SIGCONT');
    await stopProcess(running);
  };
  t.teardown(stop);
  return { host: '127.0.0.1', port, addr: `127.0.0.1:${port}`, pid: running.pid ?? 0, stop };
}
