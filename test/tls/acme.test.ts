import { stat, readFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import t from 'tap';
import { startPebble } from '../helpers/pebble.js';
import { freePort, tempDir } from '../helpers/ports.js';
import { spawnHttpsBerth, waitForPeer } from '../helpers/tls-probe.js';

// http.tls.letsencrypt against Debian's pebble, with tls-alpn-01 challenges really validated: pebble connects to
// berth's HTTPS port with ALPN acme-tls/1 and checks the challenge certificate berth shows there.

function berthEnv(dir: string, directoryUrl: string, caFile: string): Record<string, string> {
  return {
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: join(dir, 'data'),
    REGISTRY_HTTP_TLS_LETSENCRYPT_CACHEFILE: join(dir, 'acme', 'cache.json'),
    REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS: '[localhost]',
    REGISTRY_HTTP_TLS_LETSENCRYPT_EMAIL: 'ops@example.com',
    REGISTRY_HTTP_TLS_LETSENCRYPT_DIRECTORYURL: directoryUrl,
    // pebble's directory is served with a CA made by the test.
    NODE_EXTRA_CA_CERTS: caFile,
  };
}

async function getV2(port: number, ca: string): Promise<number> {
  return await new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, servername: 'localhost', path: '/v2/', ca, headers: { host: 'localhost' } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

// The two cases (each with its own pebble, port and directory) run at the same time: both mostly wait for the CA, the
// second for its certificate to come due for renewal.
t.jobs = 2;

t.test('obtains a certificate from the ACME CA, then reuses the cached one after a restart', async (t) => {
  const dir = await tempDir(t, 'berth-acme-');
  const port = await freePort();
  const pebble = await startPebble(t, { tlsPort: port });
  const env = berthEnv(dir, pebble.directoryUrl, pebble.listenerCaFile);

  const first = await spawnHttpsBerth(t, port, env);
  const root = await pebble.issuingRoot();
  const peer = await waitForPeer(port, (p) => p.authorized, { ca: root });
  t.match(peer.subjectAltName, /DNS:localhost/, 'the certificate names the configured host');
  t.equal(await getV2(port, root), 200, 'the registry answers over the ACME certificate');
  t.match(first.output(), /answered ACME tls-alpn-01 challenge/, "pebble validated through berth's own port");
  t.match(first.output(), /ACME certificate obtained/);

  const cache = join(dir, 'acme', 'cache.json');
  t.equal((await stat(cache)).mode & 0o777, 0o600, 'the cache file holds keys: readable by the server user only');
  const cached = JSON.parse(await readFile(cache, 'utf8')) as { cert?: string; accountUrl?: string };
  t.ok(cached.cert && cached.accountUrl, 'certificate and account are cached');
  await first.stop();

  const second = await spawnHttpsBerth(t, port, env);
  const again = await waitForPeer(port, (p) => p.authorized, { ca: root, timeoutMs: 15_000 });
  t.equal(again.serial, peer.serial, 'after a restart the cached certificate is served');
  t.notMatch(second.output(), /ACME certificate (obtained|renewed)|tls-alpn-01/, 'no new order after a restart');
  t.equal(await getV2(port, root), 200);
  await second.stop();
});

t.test('renews the certificate before it expires, without a restart', async (t) => {
  const dir = await tempDir(t, 'berth-acme-renew-');
  const port = await freePort();
  // Certificates that live 12 s: berth renews with a third of the lifetime left.
  const pebble = await startPebble(t, { tlsPort: port, validitySeconds: 12 });
  const berth = await spawnHttpsBerth(t, port, berthEnv(dir, pebble.directoryUrl, pebble.listenerCaFile));
  const root = await pebble.issuingRoot();
  const first = await waitForPeer(port, (p) => p.authorized, { ca: root });
  const renewed = await waitForPeer(port, (p) => p.authorized && p.serial !== first.serial, { ca: root, timeoutMs: 90_000 });
  t.not(renewed.serial, first.serial, 'a new connection gets the renewed certificate');
  t.match(berth.output(), /ACME certificate renewed/);
  t.equal(berth.proc.exitCode, null, 'the same process kept serving');
  t.equal(await getV2(port, root), 200);
});
