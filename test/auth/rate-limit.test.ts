import t from 'tap';
import { FailureLimiter } from '../../src/auth/rate-limit.js';
import { RegistryError } from '../../src/errors/registry-error.js';

/** One login through the limiter whose password check says `ok`; resolves 'ok', 'wrong' or 'blocked'. */
async function login(limiter: FailureLimiter, ip: string, account: string | undefined, ok: boolean): Promise<string> {
  let attempt;
  try {
    attempt = await limiter.begin(ip, account);
  } catch (err) {
    if (err instanceof RegistryError && err.kind === 'TOOMANYREQUESTS') return 'blocked';
    throw err;
  }
  await new Promise((r) => setImmediate(r));
  if (ok) attempt.succeeded();
  else attempt.failed();
  return ok ? 'ok' : 'wrong';
}

t.test('the window starts with the first failure and ends the block', async (t) => {
  let clock = 1_000_000;
  const limiter = new FailureLimiter(2, 10_000, () => clock);
  t.equal(await login(limiter, 'a', 'alice', false), 'wrong');
  t.equal(await login(limiter, 'a', 'alice', false), 'wrong');
  const e = (await limiter.begin('a', 'alice').catch((err: unknown) => err)) as RegistryError;
  t.equal(e.kind, 'TOOMANYREQUESTS');
  t.equal(e.headers['Retry-After'], '10');
  clock += 10_001;
  t.equal(await login(limiter, 'a', 'alice', true), 'ok', 'window over');
});

t.test('no success clears a count: not of another account, not of the same one', async (t) => {
  const limiter = new FailureLimiter(3, 60_000);
  const seen: string[] = [];
  for (let i = 0; i < 6; i++) {
    seen.push(await login(limiter, '10.0.0.1', 'alice', false));
    seen.push(await login(limiter, '10.0.0.1', 'mallory', true));
  }
  t.same(seen.filter((s) => s === 'wrong').length, 3, 'interleaved good logins of another account reset nothing');
  t.equal(await login(limiter, '10.0.0.2', 'alice', true), 'blocked', 'the account is blocked from other addresses too');
  t.equal(await login(limiter, '10.0.0.2', 'bob', true), 'ok', 'other accounts from other addresses are not');
});

t.test('per account across addresses, per address across accounts', async (t) => {
  const limiter = new FailureLimiter(3, 60_000);
  for (let i = 0; i < 3; i++) t.equal(await login(limiter, `10.0.1.${i}`, 'alice', false), 'wrong');
  t.equal(await login(limiter, '10.0.1.9', 'alice', false), 'blocked', 'a distributed guess at one account');
  for (let i = 0; i < 3; i++) t.equal(await login(limiter, '10.0.2.1', `user${i}`, false), 'wrong');
  t.equal(await login(limiter, '10.0.2.1', 'user9', false), 'blocked', 'one address spraying accounts');
  t.equal(await login(limiter, '10.0.3.1', undefined, true), 'ok', 'address-only attempts (refresh tokens)');
});

t.test('parallel attempts: wrong ones never pass the limit, right ones all pass', async (t) => {
  const limiter = new FailureLimiter(10, 60_000);
  const wrong = await Promise.all(Array.from({ length: 100 }, () => login(limiter, '10.0.0.1', 'alice', false)));
  t.equal(wrong.filter((r) => r === 'wrong').length, 10, 'exactly 10 password checks');
  t.equal(wrong.filter((r) => r === 'blocked').length, 90);
  const right = await Promise.all(Array.from({ length: 50 }, () => login(limiter, '10.0.0.2', 'bob', true)));
  t.equal(right.filter((r) => r === 'ok').length, 50, 'parallel good logins wait their turn, none refused');
});

t.test('memory is bounded: the oldest entries go first', async (t) => {
  const limiter = new FailureLimiter(3, 60_000, Date.now, 100);
  for (let i = 0; i < 1000; i++) await login(limiter, `10.1.${i >> 8}.${i & 255}`, `user${i}`, false);
  t.ok(limiter.size.addresses <= 100 && limiter.size.accounts <= 100, JSON.stringify(limiter.size));
  for (let i = 0; i < 1000; i++) await login(limiter, '10.9.9.9', `ok${i}`, true);
  t.ok(limiter.size.accounts <= 100, 'successes leave nothing behind');
});
