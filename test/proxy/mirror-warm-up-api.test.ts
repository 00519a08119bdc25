import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { TEAM_USERS, writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { startDockerRegistry } from '../helpers/docker-registry.js';
import { makeImageLayout } from '../helpers/oci-layout.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';
import { accessLog, seedWarmUpOrigin } from './helpers.js';

/**
 * Issue 15, warm-up through the JSON API: `POST /api/v1/mirror/pull` starts a job that fetches images into the
 * cache ahead of need; `GET /api/v1/mirror/pulls/<id>` shows its progress. The upstream is Debian's docker-registry;
 * its access log shows what was fetched, and that a later pull fetches no blob again.
 */

interface Job {
  id: string;
  state: string;
  platform: string | null;
  images: { total: number; done: number; failed: number };
  manifests: { done: number };
  blobs: { total: number; done: number };
  bytes: { total: number; done: number };
  items: Array<{ image: string; state: string; digest: string | null; error?: string }>;
  errors: Array<{ image: string; message: string }>;
}

interface ErrorBody {
  errors: Array<{ code: string; message: string }>;
}

type Headers = Record<string, string>;

async function post(url: string, body: string, headers: Headers = {}): Promise<{ status: number; headers: globalThis.Headers; body: unknown }> {
  const res = await fetch(`${url}/api/v1/mirror/pull`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as unknown) : null };
}

/** Polls the job until it is no longer running (the test's own timeout bounds the wait). */
async function finished(url: string, id: string, headers: Headers = {}): Promise<Job> {
  for (;;) {
    const res = await fetch(`${url}/api/v1/mirror/pulls/${id}`, { headers });
    if (res.status !== 200) throw new Error(`GET job: ${res.status} ${await res.text()}`);
    const job = (await res.json()) as Job;
    if (job.state !== 'running') return job;
    await sleep(50);
  }
}

/** An HTTP front to `target` that holds blob GETs until `release()` (so warm-up jobs stay running). */
async function startGate(t: { teardown(fn: () => unknown): void }, target: string): Promise<{ url: string; held: () => number; release(): void }> {
  const upstream = new URL(target);
  let open = false;
  const waiting: Array<() => void> = [];
  const sockets = new Set<Socket>();
  const forward = (req: IncomingMessage, res: ServerResponse) => {
    const out = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    out.on('error', () => res.destroy());
    req.pipe(out);
  };
  const server = createServer((req, res) => {
    if (!open && req.method === 'GET' && req.url?.includes('/blobs/')) waiting.push(() => forward(req, res));
    else forward(req, res);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    held: () => waiting.length,
    release() {
      open = true;
      for (const go of waiting.splice(0)) go();
    },
  };
}

t.test('POST /api/v1/mirror/pull warms the cache; the job shows progress', async (t) => {
  const { origin, multi, single, amd, arm, one } = await seedWarmUpOrigin(t, 'berth-warmapi');

  const berth = await startBerth(t, { proxy: { remoteurl: origin.url, tagttl: '1h' } });

  await t.test('one platform: a job reaching done, only that platform fetched', async (t) => {
    const started = await post(berth.url, JSON.stringify({ images: ['multi:1', 'org/single:2'], platform: 'linux/arm64' }));
    t.equal(started.status, 202, JSON.stringify(started.body));
    const job = started.body as Job;
    t.equal(started.headers.get('location'), `/api/v1/mirror/pulls/${job.id}`, 'Location names the job');
    t.equal(job.platform, 'linux/arm64');
    t.equal(job.images.total, 2);
    const done = await finished(berth.url, job.id);
    t.equal(done.state, 'done');
    t.same(done.images, { total: 2, done: 2, failed: 0 });
    t.equal(done.manifests.done, 3, 'the index, the arm64 manifest, the single manifest');
    t.same(done.blobs, { total: 5, done: 5 }, 'arm64: config and layer; single: config and two layers');
    t.equal(done.bytes.done, done.bytes.total, 'every planned byte fetched');
    t.ok(done.bytes.total > 63_000, 'the layers are counted in bytes');
    t.same(
      done.items.map((i) => [i.image, i.state, i.digest]),
      [
        ['multi:1', 'done', multi.digest],
        ['org/single:2', 'done', single.digest],
      ],
    );
    const blobGets = accessLog(origin).filter((e) => e.method === 'GET' && e.path.includes('/blobs/'));
    t.ok(
      blobGets.some((e) => e.path === `/v2/library/multi/blobs/${arm.layers[0]}`),
      'the arm64 layer was fetched ahead of need',
    );
    t.ok(
      blobGets.some((e) => e.path === `/v2/org/single/blobs/${one.layers[1]}`),
      "the single image's layers were fetched",
    );
    t.notOk(
      blobGets.some((e) => e.path.endsWith(amd.layers[0] as string)),
      'the amd64 layer was not',
    );

    const mark = accessLog(origin).length;
    const dest = await tempDir(t, 'berth-warmapi-dest-');
    await skopeo(['copy', '--src-tls-verify=false', dockerRef(berth.url, 'org/single', '2'), `oci:${dest}:single`]);
    await skopeo(['copy', '--override-arch', 'arm64', '--src-tls-verify=false', dockerRef(berth.url, 'library/multi', '1'), `oci:${dest}:multi`]);
    const after = accessLog(origin).slice(mark);
    t.notOk(
      after.some((e) => e.method === 'GET' && e.path.includes('/blobs/')),
      'pulling the warmed images makes no upstream blob GET',
      { after },
    );
  });

  await t.test('an image the upstream does not have: the job fails naming it, the others are warmed', async (t) => {
    const started = await post(berth.url, JSON.stringify({ images: ['library/nope:1', 'multi:1'] }));
    t.equal(started.status, 202);
    const done = await finished(berth.url, (started.body as Job).id);
    t.equal(done.state, 'failed');
    t.same(done.images, { total: 2, done: 1, failed: 1 });
    t.equal(done.errors.length, 1);
    t.equal(done.errors[0]?.image, 'library/nope:1');
    t.equal(done.items[0]?.state, 'failed');
    t.equal(done.items[1]?.state, 'done');
    t.equal(done.platform, null, 'every platform');
    t.ok(
      accessLog(origin).some((e) => e.method === 'GET' && e.path === `/v2/library/multi/blobs/${amd.layers[0]}`),
      'without a platform, the amd64 layer is fetched too',
    );
  });

  await t.test('bad input: 400 with error JSON', async (t) => {
    for (const [body, why] of [
      ['{', 'not JSON'],
      ['[]', 'not an object'],
      ['{"images":[]}', 'no image'],
      ['{"images":"alpine"}', 'images not an array'],
      ['{"images":["Upper/Case:1"]}', 'an invalid name'],
      ['{"images":["alpine:bad tag"]}', 'an invalid tag'],
      ['{"images":["alpine@sha256:xyz"]}', 'an invalid digest'],
      ['{"images":["alpine"],"platform":"linux"}', 'a platform without arch'],
      ['{"images":["alpine"],"platform":7}', 'a platform not a string'],
      ['{"images":["alpine"],"force":true}', 'an unknown field'],
      [JSON.stringify({ images: Array.from({ length: 101 }, (_, i) => `img${i}`) }), 'more than 100 images'],
    ] as const) {
      const res = await post(berth.url, body);
      t.equal(res.status, 400, why);
      t.equal((res.body as ErrorBody).errors[0]?.code, 'BAD_REQUEST', `${why}: BAD_REQUEST`);
    }
    const unknown = await fetch(`${berth.url}/api/v1/mirror/pulls/00000000-0000-4000-8000-000000000000`);
    t.equal(unknown.status, 404, 'an unknown job');
    t.equal(((await unknown.json()) as ErrorBody).errors[0]?.code, 'NOT_FOUND');
    const wrongMethod = await fetch(`${berth.url}/api/v1/mirror/pull`);
    t.equal(wrongMethod.status, 405, 'GET on the start endpoint');
    t.equal(((await wrongMethod.json()) as ErrorBody).errors[0]?.code, 'UNSUPPORTED');
  });

  await t.test('without a proxy section: 405 UNSUPPORTED', async (t) => {
    const plain = await startBerth(t, {});
    const res = await post(plain.url, JSON.stringify({ images: ['alpine'] }));
    t.equal(res.status, 405);
    t.equal((res.body as ErrorBody).errors[0]?.code, 'UNSUPPORTED');
  });
});

t.test('with auth: warm-up needs push on each repository, progress needs pull', async (t) => {
  const origin = await startDockerRegistry(t, { rootDirectory: await tempDir(t, 'berth-warmapi-auth-origin-') });
  const src = await tempDir(t, 'berth-warmapi-auth-src-');
  const image = await makeImageLayout(src, { layers: [10_000], tag: 'app' });
  await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:app`, dockerRef(origin.url, 'team/app', '1')]);
  const users = await writeUsers(await tempDir(t, 'berth-warmapi-users-'));
  const berth = await startBerth(t, {
    auth: {
      builtin: {
        users,
        rules: [
          { who: 'alice', repository: '**', actions: ['*'] },
          { who: 'bob', repository: 'team/**', actions: ['pull'] },
        ],
      },
    },
    proxy: { remoteurl: origin.url, tagttl: '1h' },
  });
  async function token(user: string, scope: string): Promise<Headers> {
    const basic = Buffer.from(`${user}:${TEAM_USERS[user]}`).toString('base64');
    const res = await fetch(`${berth.url}/auth/token?service=berth&scope=${encodeURIComponent(scope)}`, {
      headers: { authorization: `Basic ${basic}` },
    });
    t.equal(res.status, 200, `a token for ${user}`);
    return { authorization: `Bearer ${((await res.json()) as { token: string }).token}` };
  }
  const body = JSON.stringify({ images: ['team/app:1'] });
  const pushed = accessLog(origin).length;

  const anonymous = await post(berth.url, body);
  t.equal(anonymous.status, 401, 'no credentials: 401');
  t.match(anonymous.headers.get('www-authenticate') ?? '', /^Bearer realm=/, 'with a challenge');
  t.equal((anonymous.body as ErrorBody).errors[0]?.code, 'UNAUTHORIZED');

  const badInput = await post(berth.url, '{', await token('alice', 'repository:team/app:pull,push'));
  t.equal(badInput.status, 400, 'authenticated, bad body: 400');

  const bob = await post(berth.url, body, await token('bob', 'repository:team/app:pull,push'));
  t.equal(bob.status, 401, 'bob may only pull team/app: his token lacks push, refused');
  t.match(bob.headers.get('www-authenticate') ?? '', /scope="repository:team\/app:pull,push"/, 'the challenge names the scope needed');
  t.notOk(
    accessLog(origin)
      .slice(pushed)
      .some((e) => e.path.startsWith('/v2/team/app/')),
    'nothing was fetched for him',
  );

  const alice = await post(berth.url, body, await token('alice', 'repository:team/app:pull,push'));
  t.equal(alice.status, 202, 'alice may push team/app: the job starts');
  const id = (alice.body as Job).id;
  const done = await finished(berth.url, id, await token('bob', 'repository:team/app:pull'));
  t.equal(done.state, 'done', 'bob, who may pull team/app, sees the progress');
  t.equal(done.items[0]?.digest, image.digest);
  const anonJob = await fetch(`${berth.url}/api/v1/mirror/pulls/${id}`);
  t.equal(anonJob.status, 401, 'anonymous: no progress');
  t.ok(
    accessLog(origin).some((e) => e.method === 'GET' && e.path === `/v2/team/app/blobs/${image.images[0]?.layers[0]}`),
    "alice's job fetched the layer",
  );
});

t.test('at most two jobs run at once: a third is refused with 429 until one finishes', async (t) => {
  const origin = await startDockerRegistry(t, { rootDirectory: await tempDir(t, 'berth-warmapi-limit-origin-') });
  const src = await tempDir(t, 'berth-warmapi-limit-src-');
  await makeImageLayout(src, { layers: [5000], tag: 'a' });
  await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:a`, dockerRef(origin.url, 'lib/a', '1')]);
  const gate = await startGate(t, origin.url);
  const berth = await startBerth(t, { proxy: { remoteurl: gate.url } });
  const first = await post(berth.url, JSON.stringify({ images: ['lib/a:1'] }));
  const second = await post(berth.url, JSON.stringify({ images: ['lib/a:1'] }));
  t.equal(first.status, 202);
  t.equal(second.status, 202);
  while (gate.held() === 0) await sleep(20);
  const third = await post(berth.url, JSON.stringify({ images: ['lib/a:1'] }));
  t.equal(third.status, 429, 'two jobs running: the third is refused');
  t.equal((third.body as ErrorBody).errors[0]?.code, 'TOOMANYREQUESTS');
  t.ok(third.headers.get('retry-after'), 'with Retry-After');
  const running = await fetch(`${berth.url}/api/v1/mirror/pulls/${(first.body as Job).id}`);
  t.equal(((await running.json()) as Job).state, 'running', 'the first is still running while its blob is held');
  gate.release();
  t.equal((await finished(berth.url, (first.body as Job).id)).state, 'done');
  t.equal((await finished(berth.url, (second.body as Job).id)).state, 'done');
  const fourth = await post(berth.url, JSON.stringify({ images: ['lib/a:1'] }));
  t.equal(fourth.status, 202, 'accepted again once they finished');
  t.equal((await finished(berth.url, (fourth.body as Job).id)).state, 'done');
});

t.test('shutting down while a job waits on the upstream cancels it', async (t) => {
  const origin = await startDockerRegistry(t, { rootDirectory: await tempDir(t, 'berth-warmapi-stop-origin-') });
  const src = await tempDir(t, 'berth-warmapi-stop-src-');
  await makeImageLayout(src, { layers: [5000], tag: 'a' });
  await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:a`, dockerRef(origin.url, 'lib/a', '1')]);
  const gate = await startGate(t, origin.url);
  // An hour's upstream timeout: only cancelling the job (and its fill) lets the close finish within the test's time.
  const berth = await startBerth(t, { proxy: { remoteurl: gate.url, timeout: '1h' } });
  const job = await post(berth.url, JSON.stringify({ images: ['lib/a:1'] }));
  t.equal(job.status, 202);
  while (gate.held() === 0) await sleep(20);
  await berth.close();
  t.pass('the server closed with the job running (it did not wait for the held blob)');
  gate.release();
});
