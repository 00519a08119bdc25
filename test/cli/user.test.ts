import t from 'tap';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { runBerth } from '../helpers/berth-process.js';
import { tempDir } from '../helpers/ports.js';

function run(args: string[], stdin: string): Promise<{ code: number | null; err: string }> {
  return runBerth(args, { stdin }).then(({ code, stderr }) => ({ code, err: stderr }));
}

t.test('berth user add / rm edit an htpasswd file with bcrypt entries', async (t) => {
  const dir = await tempDir(t, 'berth-user-');
  const file = join(dir, 'htpasswd');
  t.equal((await run(['user', 'add', 'alice', '--file', file], 's3cret pass\n')).code, 0);
  t.equal((await run(['user', 'add', 'bob', '--file', file], 'hunter2\n')).code, 0);
  const lines = (await readFile(file, 'utf8')).trim().split('\n');
  t.equal(lines.length, 2);
  const alice = lines.find((l) => l.startsWith('alice:'))?.slice('alice:'.length) ?? '';
  t.match(alice, /^\$2[aby]\$/, 'bcrypt hash');
  t.ok(bcrypt.compareSync('s3cret pass', alice), 'password from stdin, without the newline');
  t.equal((await stat(file)).mode & 0o777, 0o600);
  t.equal((await run(['user', 'rm', 'bob', '--file', file], '')).code, 0);
  t.notMatch(await readFile(file, 'utf8'), /^bob:/m);
  const missing = await run(['user', 'rm', 'bob', '--file', file], '');
  t.equal(missing.code, 1);
  t.match(missing.err, /no user bob/);
  const noFile = await run(['user', 'add', 'carol'], 'x\n');
  t.equal(noFile.code, 2, 'a usage error');
  t.match(noFile.err, /--file/);
});

t.test('berth user add / rm write audit lines (stderr, and berth.audit.file of --config)', async (t) => {
  const dir = await tempDir(t, 'berth-user-audit-');
  const file = join(dir, 'htpasswd');
  const auditFile = join(dir, 'audit.log');
  const config = join(dir, 'config.yml');
  const { writeFile } = await import('node:fs/promises');
  await writeFile(config, `auth:\n  htpasswd:\n    realm: r\n    path: ${file}\nberth:\n  audit:\n    file: ${auditFile}\n`);
  const added = await run(['user', 'add', 'dave', '--config', config], 'pw\n');
  t.equal(added.code, 0);
  const line = added.err.split('\n').find((l) => l.startsWith('{'));
  t.match(JSON.parse(line ?? '{}'), { logger: 'audit', msg: 'audit', action: 'user add', name: 'dave', file, origin: 'cli' });
  t.equal((await run(['user', 'rm', 'dave', '--config', config], '')).code, 0);
  const lines = (await readFile(auditFile, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(
    lines.map((l) => [l.action, l.name]),
    [
      ['user add', 'dave'],
      ['user rm', 'dave'],
    ],
  );
  t.type(lines[0]?.user, 'string');
});
