import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { startBerth } from '../helpers/berth.js';
import { tempDir } from '../helpers/ports.js';

/**
 * `http.tls.clientcas` (mutual TLS): "a client without a certificate signed by one of those CAs is refused in the
 * TLS handshake". Certificates come from the openssl CLI; the client is node's https.
 */

const run = promisify(execFile);

async function openssl(dir: string, args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir });
}

/** A CA (`NAME-ca.pem`, `NAME-ca.key`). */
async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(dir, [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '2',
    '-subj',
    `/CN=${name} test CA`,
    '-keyout',
    `${name}-ca.key`,
    '-out',
    `${name}-ca.pem`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign',
  ]);
}

/** A leaf certificate `NAME.pem`/`NAME.key` signed by CA `ca`. */
async function makeLeaf(dir: string, name: string, ca: string, ext: string): Promise<void> {
  await openssl(dir, [
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
  ]);
  await writeFile(join(dir, `${name}.ext`), ext);
  await openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}-ca.pem`,
    '-CAkey',
    `${ca}-ca.key`,
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.pem`,
  ]);
}

interface Outcome {
  status?: number;
  error?: string;
}

/** GET /v2/ over TLS with an optional client certificate; the status, or the error that ended the attempt. */
async function get(port: number, ca: Buffer, client?: { cert: Buffer; key: Buffer }): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/v2/', ca, servername: 'localhost', ...(client ?? {}) }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
    req.end();
  });
}

t.test('http.tls.clientcas: only clients with a certificate from those CAs get through the handshake', async (t) => {
  const dir = await tempDir(t, 'berth-mtls-');
  await makeCa(dir, 'server');
  await makeCa(dir, 'clients');
  await makeCa(dir, 'other');
  await makeLeaf(dir, 'localhost', 'server', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  await makeLeaf(dir, 'alice', 'clients', 'extendedKeyUsage=clientAuth\n');
  await makeLeaf(dir, 'mallory', 'other', 'extendedKeyUsage=clientAuth\n');
  const file = (name: string) => readFile(join(dir, name));
  const serverCa = await file('server-ca.pem');
  const alice = { cert: await file('alice.pem'), key: await file('alice.key') };
  const mallory = { cert: await file('mallory.pem'), key: await file('mallory.key') };

  const tls = { certificate: join(dir, 'localhost.pem'), key: join(dir, 'localhost.key') };
  const mutual = await startBerth(t, { http: { tls: { ...tls, clientcas: [join(dir, 'clients-ca.pem')] } } });
  const port = Number(new URL(mutual.url).port);
  t.same(await get(port, serverCa, alice), { status: 200 }, 'a client certificate from a configured CA: served');
  const without = await get(port, serverCa);
  t.equal(without.status, undefined, 'no client certificate: no answer');
  t.match(without.error, /ECONNRESET|ERR_SSL|EPROTO/, `refused in the handshake (${without.error})`);
  const foreign = await get(port, serverCa, mallory);
  t.equal(foreign.status, undefined, 'a certificate from another CA: no answer');
  t.match(foreign.error, /ECONNRESET|ERR_SSL|EPROTO/, `refused in the handshake (${foreign.error})`);

  // The same server without clientcas serves anyone: what the option changes.
  const plain = await startBerth(t, { http: { tls } });
  t.same(await get(Number(new URL(plain.url).port), serverCa), { status: 200 }, 'without clientcas a client without a certificate is served');
});

t.test('http.tls.minimumtls: older protocol versions are refused', async (t) => {
  const dir = await tempDir(t, 'berth-mintls-');
  await makeCa(dir, 'server');
  await makeLeaf(dir, 'localhost', 'server', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  const berth = await startBerth(t, {
    http: { tls: { certificate: join(dir, 'localhost.pem'), key: join(dir, 'localhost.key'), minimumtls: 'tls1.3' } },
  });
  const port = Number(new URL(berth.url).port);
  const ca = await readFile(join(dir, 'server-ca.pem'));
  const attempt = (maxVersion: 'TLSv1.2' | 'TLSv1.3') =>
    new Promise<Outcome>((resolve) => {
      const req = request({ host: '127.0.0.1', port, path: '/v2/', ca, servername: 'localhost', maxVersion }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
      });
      req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
      req.end();
    });
  t.same(await attempt('TLSv1.3'), { status: 200 }, 'TLS 1.3: served');
  const old = await attempt('TLSv1.2');
  t.equal(old.status, undefined, `TLS 1.2: refused (${old.error})`);
});
