import t from 'tap';
import { randomBytes } from 'node:crypto';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { spawnBerth } from '../helpers/berth-process.js';
import { tempDir } from '../helpers/ports.js';
import { sha256 } from '../helpers/digest.js';

t.test('SIGTERM lets an in-flight upload finish, refuses new connections, then exits 0', async (t) => {
  const dir = await tempDir(t, 'berth-shutdown-');
  const berth = await spawnBerth(
    t,
    { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir, REGISTRY_LOG_LEVEL: 'warn', REGISTRY_BERTH_SHUTDOWNTIMEOUT: '20s' },
    { readyPath: '/v2/', timeoutMs: 30_000 },
  );
  const { port, url: base, proc } = berth;
  const blob = randomBytes(2 * 1024 * 1024);
  const digest = sha256(blob);
  const post = await fetch(`${base}/v2/drain/me/blobs/uploads/`, { method: 'POST' });
  const location = post.headers.get('location') as string;
  const path = `${location}?digest=${digest}`;
  const uploadData = join(dir, 'docker/registry/v2/repositories/drain/me/_uploads', location.split('/').pop() as string, 'data');
  const half = 1536 * 1024;

  const exited = berth.exited.then((e) => e.code);
  let connection: string | undefined;
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'PUT', headers: { 'content-length': blob.length } }, (res) => {
      res.resume();
      connection = res.headers.connection;
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.write(blob.subarray(0, half), () => {
      // Signal only once the server is writing this upload (a request that has not reached it yet would rightly get
      // 503 after SIGTERM), then send the rest a moment later.
      void (async () => {
        for (let i = 0; i < 200; i++) {
          if (((await stat(uploadData).catch(() => null))?.size ?? 0) > 0) break;
          await new Promise((r) => setTimeout(r, 25));
        }
        proc.kill('SIGTERM');
        setTimeout(() => req.end(blob.subarray(half)), 500);
      })();
    });
  });
  t.equal(status, 201, 'the in-flight upload completed');
  t.equal(connection, 'close', 'its answer closes the connection (the client keeps no idle connection that holds the exit)');
  t.equal(await exited, 0, 'exit 0 after draining');
  t.equal(
    await fetch(`${base}/v2/`).then(
      (r) => r.status,
      () => 0,
    ),
    0,
    'no longer listening',
  );
});
