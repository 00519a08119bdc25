import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../helpers/ports.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AWS_') && !k.startsWith('REGISTRY_') && k !== 'BERTH_CONFIG') env[k] = v;
  return env;
}

t.test('berth serve: one startup line, serves /v2/, exits 0 on SIGTERM', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const port = await freePort();
  const proc = spawn(process.execPath, [MAIN, 'serve'], {
    env: { ...cleanEnv(), REGISTRY_HTTP_ADDR: `127.0.0.1:${port}`, REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  });
  let out = '';
  proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr.on('data', (c: Buffer) => (out += c.toString()));
  let status = 0;
  for (let i = 0; i < 300 && status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 100));
    status = await fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.status, () => 0);
  }
  t.equal(status, 200);
  const res = await fetch(`http://127.0.0.1:${port}/v2/`);
  t.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
  t.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  t.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);
  const startup = out.split('\n').filter((l) => l.includes('listening'));
  t.equal(startup.length, 1, 'exactly one startup line');
  t.match(startup[0], new RegExp(`127\\.0\\.0\\.1:${port}`));
  t.match(startup[0], /storage: filesystem/);
  t.match(startup[0], /auth: none/);
  t.ok((await stat(dir)).isDirectory());
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  proc.kill('SIGTERM');
  t.equal(await exited, 0, 'exit code 0 on SIGTERM');
});

t.test('a bad config stops startup with a message naming the key', async (t) => {
  const proc = spawn(process.execPath, [MAIN, 'serve'], {
    env: { ...cleanEnv(), REGISTRY_STORAGE_DELETE_ENABLED: 'sometimes' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  proc.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
  t.equal(code, 1);
  t.match(err, /storage\.delete\.enabled: expected a boolean/);
  t.notMatch(err, /at .*\.js:\d+/, 'no stack trace');
});

t.test('--help lists the commands; unknown commands fail', async (t) => {
  const run = (args: string[]) =>
    new Promise<{ code: number | null; out: string }>((resolve) => {
      const p = spawn(process.execPath, [MAIN, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (c: Buffer) => (out += c.toString()));
      p.stderr.on('data', (c: Buffer) => (out += c.toString()));
      p.once('exit', (code) => resolve({ code, out }));
    });
  const help = await run(['--help']);
  t.equal(help.code, 0);
  t.match(help.out, /berth serve/);
  const bad = await run(['frobnicate']);
  t.equal(bad.code, 2);
  t.match(bad.out, /unknown command/);
});
