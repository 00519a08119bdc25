import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { freePort, tempDir } from '../helpers/ports.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AWS_') && !k.startsWith('REGISTRY_')) env[k] = v;
  return env;
}

t.test('SIGTERM lets an in-flight upload finish, refuses new connections, then exits 0', async (t) => {
  const dir = await tempDir(t, 'berth-shutdown-');
  const port = await freePort();
  const proc = spawn(process.execPath, [MAIN, 'serve'], {
    env: {
      ...cleanEnv(),
      REGISTRY_HTTP_ADDR: `127.0.0.1:${port}`,
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir,
      REGISTRY_LOG_LEVEL: 'warn',
      REGISTRY_BERTH_SHUTDOWNTIMEOUT: '20s',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if ((await fetch(`${base}/v2/`).then((r) => r.status, () => 0)) === 200) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const blob = randomBytes(2 * 1024 * 1024);
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
  const post = await fetch(`${base}/v2/drain/me/blobs/uploads/`, { method: 'POST' });
  const path = `${post.headers.get('location')}?digest=${digest}`;

  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'PUT', headers: { 'content-length': blob.length } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.write(blob.subarray(0, 1024 * 1024), () => {
      // Half the body is on the wire: ask the server to stop, then send the rest a moment later.
      proc.kill('SIGTERM');
      setTimeout(() => req.end(blob.subarray(1024 * 1024)), 500);
    });
  });
  t.equal(status, 201, 'the in-flight upload completed');
  t.equal(await exited, 0, 'exit 0 after draining');
  t.equal(await fetch(`${base}/v2/`).then((r) => r.status, () => 0), 0, 'no longer listening');
});
