import t from 'tap';
import { stat } from 'node:fs/promises';
import { runBerth, spawnBerth } from '../helpers/berth-process.js';
import { tempDir } from '../helpers/ports.js';

t.test('berth serve: one startup line, serves /v2/, exits 0 on SIGTERM', async (t) => {
  const dir = await tempDir(t, 'berth-cli-');
  const berth = await spawnBerth(
    t,
    { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir },
    { readyPath: '/v2/', timeoutMs: 30_000, allInterfaces: true },
  );
  const { url, port } = berth;
  t.equal(
    await fetch(`${url}/v2/`).then(
      (r) => r.status,
      () => 0,
    ),
    200,
  );
  const res = await fetch(`${url}/v2/`);
  t.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
  t.equal((await fetch(`${url}/healthz`)).status, 200);
  t.equal((await fetch(`${url}/readyz`)).status, 200);
  const startup = berth
    .output()
    .split('\n')
    .filter((l) => l.includes('listening'));
  t.equal(startup.length, 1, 'exactly one startup line');
  t.match(startup[0], new RegExp(`0\\.0\\.0\\.0:${port}`), 'one line even when bound to every interface');
  t.match(startup[0], /storage: filesystem/);
  t.match(startup[0], /auth: none/);
  t.ok((await stat(dir)).isDirectory());
  t.equal((await berth.stop()).code, 0, 'exit code 0 on SIGTERM');
});

t.test('a bad config stops startup with a message naming the key', async (t) => {
  const { code, stderr: err } = await runBerth(['serve'], { env: { REGISTRY_STORAGE_DELETE_ENABLED: 'sometimes' } });
  t.equal(code, 1);
  t.match(err, /storage\.delete\.enabled: expected a boolean/);
  t.notMatch(err, /at .*\.js:\d+/, 'no stack trace');
});

t.test('--help lists the commands; unknown commands fail', async (t) => {
  const run = async (args: string[]) => {
    const { code, output: out } = await runBerth(args);
    return { code, out };
  };
  const help = await run(['--help']);
  t.equal(help.code, 0);
  t.match(help.out, /\n {2}serve {2}/);
  const bad = await run(['frobnicate']);
  t.equal(bad.code, 2);
  t.match(bad.out, /unknown command/);
});
