import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { chmod, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { BERTH_MAIN, runBerth } from '../helpers/berth-process.js';
import { freePort, tempDir } from '../helpers/ports.js';

/**
 * Issue 17: "Common failures are one clear line, not a stack trace: port already in use, an S3 endpoint that cannot
 * be reached (name the endpoint and the cause), a config path that is a directory, permission denied on the storage
 * root." Each: exit status 1, one `berth: ...` line on stderr, no stack frame.
 */

/** stderr without Node's own warnings (the AWS SDK's Node-version notice). */
function ownLines(stderr: string): string[] {
  const lines = stderr.split('\n').filter((l) => l.length > 0);
  return lines.filter((l) => l.startsWith('berth'));
}

function oneLine(t: Test, r: { code: number | null; stderr: string }, pattern: RegExp): void {
  t.equal(r.code, 1, 'exit status 1');
  t.same(ownLines(r.stderr).length, 1, `one line: ${r.stderr}`);
  t.match(ownLines(r.stderr)[0], pattern);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
}

t.test('the port is already in use', async (t) => {
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => taken.close(() => resolve())));
  const port = (taken.address() as { port: number }).port;
  const dir = await tempDir(t, 'berth-fail-port-');
  const r = await runBerth(['serve'], { env: { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir, REGISTRY_HTTP_ADDR: `127.0.0.1:${port}` } });
  oneLine(t, r, new RegExp(`^berth: cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use$`));
});

t.test('an S3 endpoint that cannot be reached is named with the cause', async (t) => {
  const port = await freePort();
  const r = await runBerth(['serve'], {
    env: {
      REGISTRY_STORAGE: 's3',
      REGISTRY_STORAGE_S3_BUCKET: 'images',
      REGISTRY_STORAGE_S3_REGIONENDPOINT: `http://127.0.0.1:${port}`,
      REGISTRY_STORAGE_S3_ACCESSKEY: 'key',
      REGISTRY_STORAGE_S3_SECRETKEY: 'secret',
      REGISTRY_HTTP_ADDR: '127.0.0.1:0',
    },
  });
  oneLine(t, r, new RegExp(`^berth: storage s3 bucket images at http://127\\.0\\.0\\.1:${port}/?: connect ECONNREFUSED 127\\.0\\.0\\.1:${port}$`));
});

t.test('a config path that is a directory', async (t) => {
  const dir = await tempDir(t, 'berth-fail-cfgdir-');
  const r = await runBerth(['serve', dir]);
  oneLine(t, r, new RegExp(`^berth: configuration error: cannot read config file ${dir}: it is a directory, not a file$`));
});

t.test('permission denied on the storage root', async (t) => {
  const dir = await tempDir(t, 'berth-fail-perm-');
  const parent = join(dir, 'locked');
  await mkdir(parent);
  await chmod(parent, 0o555);
  await chmod(dir, 0o755);
  // A minimal environment: the test runner's hooks (NODE_OPTIONS and its own variables) would write into the
  // worktree, which the unprivileged user may not.
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: '/tmp',
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: join(parent, 'data'),
    REGISTRY_HTTP_ADDR: '127.0.0.1:0',
  };
  // As root, permissions do not apply: run berth as nobody (util-linux setpriv) instead.
  // `env -i` starts berth with exactly `env`: tap's process hooks add themselves to a spawned child's environment.
  const user = process.getuid?.() === 0 ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] : [];
  const command = [...user, 'env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), process.execPath, BERTH_MAIN, 'serve'];
  const r = spawnSync(command[0] as string, command.slice(1), { encoding: 'utf8', timeout: 20_000 });
  oneLine(
    t,
    { code: r.status, stderr: r.stderr },
    new RegExp(`^berth: storage filesystem ${parent}/data: EACCES: permission denied, mkdir '${parent}/data'$`),
  );
  await chmod(parent, 0o755);
});
