import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import type { Test } from 'tap';
import { tempDir } from './ports.js';
import { cleanEnv, onFreePort, stopProcess, waitForChild } from './process.js';
import { makeCertificates } from './tls-files.js';

/** Debian's pebble (Let's Encrypt's test ACME server), started by a test. */
export interface Pebble {
  /** The ACME directory, `https://127.0.0.1:PORT/dir`. */
  directoryUrl: string;
  /** The CA that signed pebble's own HTTPS listener: trust it (NODE_EXTRA_CA_CERTS) to reach the directory. */
  listenerCaFile: string;
  /** The root the issued certificates chain to (pebble makes a new one at every start). */
  issuingRoot(): Promise<string>;
  /** pebble's output so far. */
  output(): string;
}

/** Options for {@link startPebble}. */
export interface PebbleOptions {
  /** Where the ACME server connects to validate tls-alpn-01 challenges (the registry's HTTPS port). */
  tlsPort: number;
  /** Lifetime of issued certificates, in seconds (pebble's `certificateValidityPeriod`; default: pebble's). */
  validitySeconds?: number;
}

/** GET over HTTPS trusting only `ca`. */
export async function httpsGetText(url: string, ca: string): Promise<{ status: number; body: string }> {
  return await new Promise((resolve, reject) => {
    const req = request(url, { ca, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Starts pebble on free loopback ports with challenges really validated (no PEBBLE_VA_ALWAYS_VALID): the CA connects
 * to `localhost:tlsPort` for tls-alpn-01. PEBBLE_VA_NOSLEEP=1 skips its random validation delays. Stopped at teardown.
 */
export async function startPebble(t: Test, options: PebbleOptions): Promise<Pebble> {
  const dir = await tempDir(t, 'berth-pebble-');
  const certs = await makeCertificates(dir, 'pebble');
  const ca = await readFile(certs.caCert, 'utf8');
  return onFreePort(async (port) => {
    const mgmt = port + 1 <= 65535 ? port + 1 : port - 1;
    const configFile = join(dir, `pebble-${port}.json`);
    await writeFile(
      configFile,
      JSON.stringify({
        pebble: {
          listenAddress: `127.0.0.1:${port}`,
          managementListenAddress: `127.0.0.1:${mgmt}`,
          certificate: certs.cert,
          privateKey: certs.key,
          httpPort: 1,
          tlsPort: options.tlsPort,
          ocspResponderURL: '',
          externalAccountBindingRequired: false,
          ...(options.validitySeconds ? { certificateValidityPeriod: options.validitySeconds } : {}),
        },
      }),
    );
    const proc = spawn('/usr/bin/pebble', ['-config', configFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: cleanEnv({ PEBBLE_VA_NOSLEEP: '1' }),
    });
    const logs: string[] = [];
    for (const s of [proc.stdout, proc.stderr]) s.on('data', (c: Buffer) => logs.push(c.toString('utf8')));
    t.teardown(() => stopProcess(proc));
    const directoryUrl = `https://127.0.0.1:${port}/dir`;
    const state = await waitForChild(
      proc,
      async () => {
        try {
          return (
            (await httpsGetText(directoryUrl, ca)).status === 200 && (await httpsGetText(`https://127.0.0.1:${mgmt}/roots/0`, ca)).status === 200
          );
        } catch {
          return false;
        }
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    );
    if (state !== 'ready') {
      await stopProcess(proc);
      throw new Error(`pebble did not start (${state}):\n${logs.join('')}`);
    }
    return {
      directoryUrl,
      listenerCaFile: certs.caCert,
      issuingRoot: async () => (await httpsGetText(`https://127.0.0.1:${mgmt}/roots/0`, ca)).body,
      output: () => logs.join(''),
    };
  });
}
