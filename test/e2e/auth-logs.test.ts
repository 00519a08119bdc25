import { Writable } from 'node:stream';
import t from 'tap';
import { pino } from 'pino';
import { writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { tempDir } from '../helpers/ports.js';

/**
 * Issue 4: "Authorization headers and tokens never appear in logs", checked at the most verbose level with every
 * kind of request the auth flow makes (token fetches with Basic credentials, OAuth2 form posts with passwords and
 * refresh tokens, registry requests with good, bad and insufficient Bearer tokens).
 */
t.test('credentials and tokens never reach the log', async (t) => {
  const dir = await tempDir(t, 'berth-e2e-authlog-');
  const users = await writeUsers(dir, { alice: 'alice-secret-pw' });
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString('utf8'));
      done();
    },
  });
  const logger = pino({ level: 'trace' }, sink);
  const berth = await startBerth(t, { log: { level: 'trace', accesslog: { disabled: false } }, auth: { builtin: { users } } }, { logger });

  const basic = `Basic ${Buffer.from('alice:alice-secret-pw').toString('base64')}`;
  const wrongBasic = `Basic ${Buffer.from('alice:wrong-secret-pw').toString('base64')}`;
  const res = await fetch(`${berth.url}/auth/token?service=berth&scope=repository:team/app:pull,push&offline_token=true`, {
    headers: { authorization: basic },
  });
  t.equal(res.status, 200);
  const body = (await res.json()) as { token: string; refresh_token: string };
  t.equal((await fetch(`${berth.url}/auth/token?service=berth`, { headers: { authorization: wrongBasic } })).status, 401);
  const form = await fetch(`${berth.url}/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: body.refresh_token, service: 'berth', scope: 'registry:catalog:*' }),
  });
  t.equal(form.status, 200);
  const catalogToken = ((await form.json()) as { token: string }).token;
  const pwForm = await fetch(`${berth.url}/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', username: 'alice', password: 'wrong-secret-pw', service: 'berth' }),
  });
  t.equal(pwForm.status, 401);

  t.equal((await fetch(`${berth.url}/v2/`, { headers: { authorization: `Bearer ${body.token}` } })).status, 200);
  t.equal(
    (await fetch(`${berth.url}/v2/_catalog`, { headers: { authorization: `Bearer ${catalogToken}` } })).status,
    200,
    'catalog with registry:catalog:*',
  );
  t.equal((await fetch(`${berth.url}/v2/_catalog`, { headers: { authorization: `Bearer ${body.token}` } })).status, 401, 'catalog needs its scope');
  t.equal((await fetch(`${berth.url}/v2/team/app/tags/list`, { headers: { authorization: `Bearer ${body.token}x` } })).status, 401);
  t.equal((await fetch(`${berth.url}/v2/team/app/tags/list`, { headers: { authorization: basic } })).status, 401);

  const text = lines.join('');
  t.ok(lines.length > 0, 'something was logged');
  for (const [what, secret] of [
    ['access token', body.token],
    ['access token signature', body.token.split('.')[2] ?? ''],
    ['refresh token signature', body.refresh_token.split('.')[2] ?? ''],
    ['catalog token signature', catalogToken.split('.')[2] ?? ''],
    ['Basic credentials', basic.slice(6)],
    ['wrong Basic credentials', wrongBasic.slice(6)],
    ['password', 'alice-secret-pw'],
    ['wrong password', 'wrong-secret-pw'],
  ] as const) {
    t.notOk(text.includes(secret), `${what} not in the log`);
  }
  t.notMatch(text, /authorization/i, 'no Authorization header in the log');
});
