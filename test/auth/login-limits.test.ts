/** The failed-login limit in htpasswd mode, where every authenticated API call is a login. */
import t from 'tap';
import { writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { tempDir } from '../helpers/ports.js';

const basic = (u: string, p: string) => ({ authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });

t.test('htpasswd: good API calls of another account do not clear the failures', async (t) => {
  const dir = await tempDir(t, 'berth-limits-');
  const users = await writeUsers(dir, { alice: 'alice-pw', mallory: 'mallory-pw' });
  const berth = await startBerth(t, { auth: { htpasswd: { realm: 'r', path: users }, ratelimit: { failures: 10, window: '1m' } } });
  const statuses: number[] = [];
  for (let i = 0; i < 45; i++) {
    statuses.push((await fetch(`${berth.url}/v2/`, { headers: basic('alice', `guess-${i}`) })).status);
    await fetch(`${berth.url}/v2/`, { headers: basic('mallory', 'mallory-pw') });
  }
  t.equal(statuses.filter((x) => x === 401).length, 10, '10 guesses were checked');
  t.equal(statuses.filter((x) => x === 429).length, 35, 'the rest were refused');
});

t.test('htpasswd: 100 parallel wrong logins get exactly the limit of password checks', async (t) => {
  const dir = await tempDir(t, 'berth-limits-');
  const users = await writeUsers(dir, { alice: 'alice-pw' });
  const berth = await startBerth(t, { auth: { htpasswd: { realm: 'r', path: users }, ratelimit: { failures: 10, window: '1m' } } });
  const statuses = await Promise.all(
    Array.from({ length: 100 }, (_, i) => fetch(`${berth.url}/v2/`, { headers: basic('alice', `p-${i}`) }).then((r) => r.status)),
  );
  t.equal(statuses.filter((x) => x === 401).length, 10);
  t.equal(statuses.filter((x) => x === 429).length, 90);
  const other = await Promise.all(Array.from({ length: 30 }, () => fetch(`${berth.url}/v2/`, { headers: basic('bob', 'x') }).then((r) => r.status)));
  t.equal(other.filter((x) => x === 429).length, 30, 'the address is blocked for every account');
});
