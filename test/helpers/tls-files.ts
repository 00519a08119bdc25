import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A test certificate authority and one server certificate it signed, as PEM files in `dir`. */
export interface TestCertificates {
  caCert: string;
  cert: string;
  key: string;
}

/**
 * Makes a CA and a certificate for `localhost`/127.0.0.1 signed by it, with openssl (EC P-256). `name` prefixes the
 * file names so one directory can hold several sets.
 */
export async function makeCertificates(dir: string, name = 'server', cn = 'localhost'): Promise<TestCertificates> {
  const p = (f: string) => join(dir, `${name}-${f}`);
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    p('ca-key.pem'),
    '-out',
    p('ca.pem'),
    '-days',
    '2',
    '-subj',
    `/CN=berth test CA ${name}`,
  ]);
  await run('openssl', [
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    p('key.pem'),
    '-out',
    p('csr.pem'),
    '-subj',
    `/CN=${cn}`,
  ]);
  await writeFile(p('ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    p('csr.pem'),
    '-CA',
    p('ca.pem'),
    '-CAkey',
    p('ca-key.pem'),
    '-CAcreateserial',
    '-out',
    p('cert.pem'),
    '-days',
    '2',
    '-extfile',
    p('ext.cnf'),
  ]);
  return { caCert: p('ca.pem'), cert: p('cert.pem'), key: p('key.pem') };
}
