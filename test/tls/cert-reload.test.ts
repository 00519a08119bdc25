import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import t from 'tap';
import { startBerth } from '../helpers/berth.js';
import { tempDir } from '../helpers/ports.js';
import { makeCertificates } from '../helpers/tls-files.js';
import { tlsPeer, waitForPeer } from '../helpers/tls-probe.js';

// http.tls.certificate/key are reloaded when the files change (cert-manager rotates a Secret's files in place):
// new connections get the new certificate, the server keeps running, and a half-written pair is never served.

t.test('a rewritten certificate and key are served to new connections without a restart', async (t) => {
  const dir = await tempDir(t, 'berth-tls-reload-');
  const a = await makeCertificates(dir, 'a');
  const b = await makeCertificates(dir, 'b');
  const certFile = join(dir, 'tls.crt');
  const keyFile = join(dir, 'tls.key');
  await copyFile(a.cert, certFile);
  await copyFile(a.key, keyFile);

  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  // The files are checked every 200 ms instead of every 5 s: the test waits for each change to be seen.
  const berth = await startBerth(
    t,
    { http: { tls: { certificate: certFile, key: keyFile } } },
    { logger: pino({ level: 'info' }, sink), tlsPollIntervalMs: 200 },
  );
  const port = Number(new URL(berth.url).port);
  const caA = await readFile(a.caCert, 'utf8');
  const caB = await readFile(b.caCert, 'utf8');

  const before = await tlsPeer(port, { ca: caA });
  t.ok(before.authorized, 'the first certificate is served');

  // Half a rotation: the new certificate next to the old key. The pair does not load; the old one stays in use.
  await copyFile(b.cert, certFile);
  const deadline = Date.now() + 30_000;
  while (!lines.some((l) => l.includes('do not load together')) && Date.now() < deadline) await sleep(100);
  t.ok(
    lines.some((l) => l.includes('do not load together')),
    'the mismatched pair is noticed and reported',
  );
  const during = await tlsPeer(port, { ca: caA });
  t.equal(during.serial, before.serial, 'the previous certificate is still served');
  t.ok(during.authorized);

  await copyFile(b.key, keyFile);
  const after = await waitForPeer(port, (p) => p.serial !== before.serial, { ca: caB, timeoutMs: 30_000 });
  t.ok(after.authorized, 'the new certificate, signed by the new CA, is served');
  t.ok(
    lines.some((l) => l.includes('TLS certificate reloaded')),
    'the reload is logged',
  );
  const res = await fetch(berth.url.replace('http:', 'https:') + '/v2/', { signal: AbortSignal.timeout(5000) }).catch((err: unknown) => err);
  t.ok(res instanceof Error, 'plain fetch without the CA refuses the test certificate (the listener is really TLS)');
});

t.test('a key that does not match the certificate stops startup', async (t) => {
  const dir = await tempDir(t, 'berth-tls-mismatch-');
  const a = await makeCertificates(dir, 'a');
  const b = await makeCertificates(dir, 'b');
  await t.rejects(startBerth(t, { http: { tls: { certificate: a.cert, key: b.key } } }), /key values mismatch|KEY_VALUES_MISMATCH/i);
});
