/** Automatic cross-mount with access rules: a mount never hands a caller a blob of a repository it cannot pull. */
import { createHash } from 'node:crypto';
import t from 'tap';
import { writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { tempDir } from '../helpers/ports.js';

const RULES = [
  { who: 'admin', repository: '**', actions: ['*'] },
  { who: 'alice', repository: 'alice/**', actions: ['*'] },
  { who: 'alice', repository: 'shared/**', actions: ['pull'] },
];

t.test('a mount without from only takes a blob from a repository the caller may pull', async (t) => {
  const dir = await tempDir(t, 'berth-mount-');
  const users = await writeUsers(dir, { admin: 'admin-pw', alice: 'alice-pw' });
  const berth = await startBerth(t, { auth: { builtin: { users, rules: RULES } } });
  const token = async (user: string, scopes: string[]): Promise<Record<string, string>> => {
    const q = new URLSearchParams({ service: 'berth' });
    for (const s of scopes) q.append('scope', s);
    const res = await fetch(`${berth.url}/auth/token?${q.toString()}`, {
      headers: { authorization: `Basic ${Buffer.from(`${user}:${user}-pw`).toString('base64')}` },
    });
    const body = (await res.json()) as { token: string };
    return { authorization: `Bearer ${body.token}` };
  };
  const secret = Buffer.from('admin only layer');
  const shared = Buffer.from('a layer alice may read');
  const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const admin = await token('admin', ['repository:admin/private:pull,push', 'repository:shared/base:pull,push']);
  for (const [repo, data] of [
    ['admin/private', secret],
    ['shared/base', shared],
  ] as const) {
    const r = await fetch(`${berth.url}/v2/${repo}/blobs/uploads/?digest=${digestOf(data)}`, { method: 'POST', headers: admin, body: data });
    t.equal(r.status, 201, `admin pushed to ${repo}`);
  }

  const alice = await token('alice', ['repository:alice/x:pull,push', 'repository:admin/private:pull', 'repository:shared/base:pull']);
  const steal = await fetch(`${berth.url}/v2/alice/x/blobs/uploads/?mount=${digestOf(secret)}`, { method: 'POST', headers: alice });
  t.equal(steal.status, 202, 'no mount from admin/private: a normal upload starts');
  t.ok(steal.headers.get('location')?.includes('/v2/alice/x/blobs/uploads/'));
  const read = await fetch(`${berth.url}/v2/alice/x/blobs/${digestOf(secret)}`, { headers: alice });
  t.equal(read.status, 404, "alice cannot read admin/private's layer through her repository");

  const from = await fetch(`${berth.url}/v2/alice/x/blobs/uploads/?mount=${digestOf(secret)}&from=admin/private`, { method: 'POST', headers: alice });
  t.equal(from.status, 401, 'with from, pull on from is required');

  const allowed = await fetch(`${berth.url}/v2/alice/x/blobs/uploads/?mount=${digestOf(shared)}`, { method: 'POST', headers: alice });
  t.equal(allowed.status, 201, 'mounted from shared/base, which alice may pull');
  t.equal((await fetch(`${berth.url}/v2/alice/x/blobs/${digestOf(shared)}`, { headers: alice })).status, 200);

  const narrow = await token('alice', ['repository:alice/y:pull,push']);
  const notInToken = await fetch(`${berth.url}/v2/alice/y/blobs/uploads/?mount=${digestOf(shared)}`, { method: 'POST', headers: narrow });
  t.equal(notInToken.status, 202, 'only repositories the token grants pull on are candidates');
});
