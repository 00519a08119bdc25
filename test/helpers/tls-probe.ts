import { spawn, type ChildProcess } from 'node:child_process';
import { connect as tcpConnect } from 'node:net';
import { connect, type PeerCertificate } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Test } from 'tap';
import { BERTH_MAIN } from './berth-process.js';
import { cleanEnv, plainNode, stopProcess } from './process.js';

/** What a TLS client saw on one new connection. */
export interface TlsPeer {
  serial: string;
  subjectAltName: string;
  /** The chain verified against the `ca` given to {@link tlsPeer}. */
  authorized: boolean;
  authorizationError?: string;
  validFrom: string;
}

/** Opens one new TLS connection to 127.0.0.1:`port` naming `servername`, and reports the certificate it was shown. */
export async function tlsPeer(port: number, options: { ca?: string; servername?: string } = {}): Promise<TlsPeer> {
  return await new Promise((resolve, reject) => {
    const socket = connect({
      host: '127.0.0.1',
      port,
      servername: options.servername ?? 'localhost',
      rejectUnauthorized: false,
      ...(options.ca ? { ca: options.ca } : {}),
    });
    socket.setTimeout(5000, () => socket.destroy(new Error('TLS handshake timed out')));
    socket.once('error', reject);
    socket.once('secureConnect', () => {
      const cert: PeerCertificate = socket.getPeerCertificate();
      const peer: TlsPeer = {
        serial: cert.serialNumber,
        subjectAltName: cert.subjectaltname ?? '',
        authorized: socket.authorized,
        validFrom: cert.valid_from,
      };
      if (socket.authorizationError) peer.authorizationError = String(socket.authorizationError);
      socket.end();
      resolve(peer);
    });
  });
}

/**
 * Polls new TLS connections until `accept(peer)` holds, up to `timeoutMs` (a bound on waiting for a CA or a file
 * watcher, not a speed assertion). Returns the accepted peer, or throws with the last error seen.
 */
export async function waitForPeer(
  port: number,
  accept: (peer: TlsPeer) => boolean,
  options: { ca?: string; timeoutMs?: number } = {},
): Promise<TlsPeer> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  let last: unknown = 'no attempt';
  while (Date.now() < deadline) {
    try {
      const peer = await tlsPeer(port, options.ca ? { ca: options.ca } : {});
      if (accept(peer)) return peer;
      last = `certificate ${peer.serial} not accepted yet`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(200);
  }
  throw new Error(`no accepted TLS peer on port ${port}: ${String(last)}`);
}

/** A `berth serve` process whose listener speaks TLS (spawnBerth's readiness check is plain HTTP). */
export interface HttpsBerth {
  proc: ChildProcess;
  logs: string[];
  output(): string;
  stop(): Promise<void>;
}

/** Starts `berth serve` with `env` on 127.0.0.1:`port` and resolves once the port accepts TCP connections. */
export async function spawnHttpsBerth(t: Test, port: number, env: Record<string, string>): Promise<HttpsBerth> {
  const proc = spawn(...plainNode([BERTH_MAIN, 'serve']), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: cleanEnv({ ...env, REGISTRY_HTTP_ADDR: `127.0.0.1:${port}` }),
  });
  const logs: string[] = [];
  for (const s of [proc.stdout, proc.stderr]) s.on('data', (c: Buffer) => logs.push(...c.toString('utf8').split('\n').filter(Boolean)));
  const stop = () => stopProcess(proc);
  t.teardown(stop);
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`berth exited with ${proc.exitCode}:\n${logs.join('\n')}`);
    const open = await new Promise<boolean>((resolve) => {
      const s = tcpConnect({ host: '127.0.0.1', port });
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (open) break;
    if (Date.now() > deadline) throw new Error(`berth did not listen on ${port}:\n${logs.join('\n')}`);
    await sleep(100);
  }
  return { proc, logs, output: () => logs.join('\n'), stop };
}
