import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import bcrypt from 'bcryptjs';
import { HtpasswdStore, parseHtpasswd, userAdd, userRemove } from '../../src/auth/htpasswd.js';
import { BasicAuthorizer } from '../../src/auth/basic.js';
import { FailureLimiter } from '../../src/auth/rate-limit.js';
import { RegistryError } from '../../src/errors/registry-error.js';
import { tempDir } from '../helpers/ports.js';

t.test('userAdd / userRemove write bcrypt entries', async (t) => {
  const dir = await tempDir(t, 'berth-htpasswd-');
  const file = join(dir, 'htpasswd');
  await userAdd(file, 'alice', 's3cret');
  await userAdd(file, 'bob', 'hunter2');
  const text = await readFile(file, 'utf8');
  t.match(text, /^alice:\$2y\$10\$[./A-Za-z0-9]{53}\nbob:\$2y\$10\$/, 'htpasswd -B style lines');
  t.equal((await stat(file)).mode & 0o777, 0o600, 'new file is private');
  const alice = parseHtpasswd(text).get('alice') ?? '';
  t.ok(bcrypt.compareSync('s3cret', alice), 'hash is bcrypt of the password');

  await userAdd(file, 'alice', 'changed');
  const users = parseHtpasswd(await readFile(file, 'utf8'));
  t.equal(users.size, 2, 'replaced, not duplicated');
  t.ok(bcrypt.compareSync('changed', users.get('alice') ?? ''));

  t.equal(await userRemove(file, 'alice'), true);
  t.equal(await userRemove(file, 'alice'), false);
  t.same([...parseHtpasswd(await readFile(file, 'utf8')).keys()], ['bob']);

  await t.rejects(userAdd(file, 'bad:name', 'x'), /invalid user name/);
  await t.rejects(userAdd(file, 'anonymous', 'x'), /reserved/);
  await t.rejects(userAdd(file, 'carol', ''), /empty/);
  await t.rejects(userAdd(file, 'carol', 'x'.repeat(73)), /72 bytes/);
});

t.test('store verifies, skips non-bcrypt lines and reloads on change', async (t) => {
  const dir = await tempDir(t, 'berth-htpasswd-');
  const file = join(dir, 'htpasswd');
  const hash2a = bcrypt.hashSync('pw-a', 4).replace('$2b$', '$2a$');
  await writeFile(file, `# comment\nalice:${hash2a}\nmd5user:$apr1$abc$def\nbroken\n`);
  const store = new HtpasswdStore(file);
  t.equal(await store.verify('alice', 'pw-a'), true, '$2a$ entry');
  t.equal(await store.verify('alice', 'pw-a'), true, 'cached success still true');
  t.equal(await store.verify('alice', 'wrong'), false);
  t.equal(await store.verify('md5user', 'anything'), false, 'non-bcrypt entry ignored');
  t.equal(await store.verify('nobody', 'pw-a'), false);

  await userAdd(file, 'bob', 'pw-b');
  t.equal(await store.verify('bob', 'pw-b'), true, 'new user picked up without restart');
  await userAdd(file, 'alice', 'pw-new');
  t.equal(await store.verify('alice', 'pw-a'), false, 'old password no longer valid after change');
  t.equal(await store.verify('alice', 'pw-new'), true);

  const missing = new HtpasswdStore(join(dir, 'nope'));
  t.equal(await missing.verify('alice', 'pw-new'), false, 'missing file: nobody');
});

t.test('Basic authorizer', async (t) => {
  const dir = await tempDir(t, 'berth-htpasswd-');
  const file = join(dir, 'htpasswd');
  await userAdd(file, 'alice', 'pw');
  const authz = new BasicAuthorizer(new HtpasswdStore(file), 'my realm', new FailureLimiter(3, 60_000));
  const basic = (u: string, p: string, ip = '10.0.0.1') => ({
    method: 'GET',
    ip,
    headers: { authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` },
  });
  const access = [{ type: 'repository' as const, name: 'a/b', actions: ['pull' as const, 'push' as const] }];
  t.same(await authz.authorize(basic('alice', 'pw'), access), { account: 'alice' });

  const none = (await authz.authorize({ method: 'GET', ip: '10.0.0.1', headers: {} }, access).catch((e: unknown) => e)) as RegistryError;
  t.type(none, RegistryError);
  t.equal(none.kind, 'UNAUTHORIZED');
  t.equal(none.headers['WWW-Authenticate'], 'Basic realm="my realm"');

  for (let i = 0; i < 3; i++) {
    const e = (await authz.authorize(basic('alice', 'nope'), access).catch((err: unknown) => err)) as RegistryError;
    t.equal(e.kind, 'UNAUTHORIZED', `failure ${i + 1} is 401`);
  }
  const limited = (await authz.authorize(basic('alice', 'pw'), access).catch((err: unknown) => err)) as RegistryError;
  t.equal(limited.kind, 'TOOMANYREQUESTS', 'blocked even with the right password');
  t.equal(limited.descriptor.code, 'TOOMANYREQUESTS');
  t.match(limited.headers['Retry-After'], /^\d+$/);
  const elsewhere = (await authz.authorize(basic('alice', 'pw', '10.0.0.2'), access).catch((err: unknown) => err)) as RegistryError;
  t.equal(elsewhere.kind, 'TOOMANYREQUESTS', 'the account is blocked from other addresses too');
  await userAdd(file, 'bob', 'bob-pw');
  t.same(await authz.authorize(basic('bob', 'bob-pw', '10.0.0.2'), access), { account: 'bob' }, 'other accounts elsewhere unaffected');
});
