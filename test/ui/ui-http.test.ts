import t from 'tap';
import { escapeHtml, html, raw } from '../../src/http/ui/html.js';
import { humanSize, relativeTime } from '../../src/http/ui/format.js';
import { UiSessions } from '../../src/http/ui/ui-sessions.js';
import { OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, RegistryClient, randomLayer } from '../helpers/registry-client.js';
import { startBerth } from '../helpers/berth.js';
import { TEAM_USERS, writeUsers } from '../helpers/auth.js';
import { tempDir } from '../helpers/ports.js';
import { Visitor } from '../helpers/ui-visitor.js';

/** Plain HTTP tests of the web UI: headers, escaping, CSRF, login, per-user views. The browser tests are in ui-browser.test.ts. */

const HOSTILE_LABEL = '<script>alert("label")</script>';
const HOSTILE_ANNOTATION = '<img src=x onerror=alert(1)>';

t.test('html escapes every interpolation unless marked raw', async (t) => {
  t.equal(escapeHtml(`<a href="x" onclick='y'>&\``), '&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&#96;');
  t.equal(html`<p title="${'"><script>'}">${'<b>'}</p>`.value, '<p title="&quot;&gt;&lt;script&gt;">&lt;b&gt;</p>');
  t.equal(html`<ul>${['<i>', html`<li>${'&'}</li>`]}</ul>`.value, '<ul>&lt;i&gt;<li>&amp;</li></ul>', 'arrays: text escaped, fragments kept');
  t.equal(html`${raw('<br>')}${null}${undefined}${false}${0}`.value, '<br>0');
  t.equal(humanSize(1536), '1.5 KiB');
  t.equal(humanSize(512), '512 B');
  t.equal(humanSize(5 * 1024 ** 3), '5.0 GiB');
  t.equal(relativeTime(new Date(Date.now() - 3 * 60_000).toISOString()), '3 minutes ago');
});

t.test('sessions: opaque ids, expiry, bounded, CSRF tokens bound to the id', async (t) => {
  let now = 1_000_000;
  const s = new UiSessions({ idleMs: 1000, maxMs: 5000, maxSessions: 2, now: () => now });
  const a = s.login('alice');
  t.ok(UiSessions.isId(a.id));
  t.equal(s.get(a.id)?.account, 'alice');
  now += 900;
  t.equal(s.get(a.id)?.account, 'alice', 'use extends the idle time');
  now += 900;
  t.equal(s.get(a.id)?.account, 'alice');
  now += 1001;
  t.equal(s.get(a.id), undefined, 'idle expiry');
  const b = s.login('b');
  s.login('c');
  s.login('d');
  t.equal(s.size, 2, 'bounded');
  t.equal(s.get(b.id), undefined, 'the oldest went first');
  const id = UiSessions.newId();
  t.ok(s.checkCsrf(id, s.csrfToken(id)));
  t.notOk(s.checkCsrf(id, s.csrfToken(UiSessions.newId())), "another visitor's token is refused");
  t.notOk(s.checkCsrf(id, undefined));
  t.notOk(s.checkCsrf('short', s.csrfToken('short')), 'ids of the wrong shape are refused');
});

t.test('without auth: open like /v2/, security headers, escaping, CSRF on deletes', async (t) => {
  const berth = await startBerth(t);
  const client = new RegistryClient(berth.url);
  await client.pushImage('app/web', '1.0', [randomLayer()]);
  // An image whose pusher wrote markup into its label and annotation.
  const layer = await client.pushBlob('evil/image', randomLayer());
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Labels: { 'org.example.note': HOSTILE_LABEL, [HOSTILE_ANNOTATION]: 'key too' } },
      history: [{ created_by: HOSTILE_LABEL }],
    }),
  );
  const c = await client.pushBlob('evil/image', config);
  await client.putManifest(
    'evil/image',
    'latest',
    {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: c.digest, size: c.size },
      layers: [{ mediaType: OCI_LAYER, digest: layer.digest, size: layer.size }],
      annotations: { 'org.opencontainers.image.description': HOSTILE_ANNOTATION },
    },
    OCI_MANIFEST,
  );
  const v = new Visitor(berth.url);

  const root = await v.get('/');
  t.equal(root.status, 303);
  t.equal(root.headers.get('location'), '/ui/');

  const list = await v.get('/ui/');
  t.equal(list.status, 200);
  t.match(list.headers.get('content-type'), /^text\/html; charset=utf-8/);
  const csp = list.headers.get('content-security-policy') ?? '';
  t.match(csp, /default-src 'self'/);
  t.match(csp, /frame-ancestors 'none'/);
  t.match(csp, /script-src 'self'/);
  t.notMatch(csp, /unsafe-inline|unsafe-eval/);
  t.equal(list.headers.get('x-content-type-options'), 'nosniff');
  t.equal(list.headers.get('referrer-policy'), 'same-origin');
  const setCookie = list.headers.get('set-cookie') ?? '';
  t.match(setCookie, /^berth_ui=[A-Za-z0-9_-]{43}; Path=\/ui; HttpOnly; SameSite=Strict/);
  t.notMatch(setCookie, /Secure/, 'no Secure flag over plain HTTP');
  t.notMatch(list.body, /<script>|<style|\sstyle=|\son[a-z]+=/i, 'no inline script, style or handler');
  t.match(list.body, /href="\/ui\/r\/app\/web">app\/web</);
  t.match(list.body, /href="\/ui\/r\/evil\/image">evil\/image</);

  const filtered = await v.get('/ui/?q=WEB');
  t.match(filtered.body, /app\/web/);
  t.notMatch(filtered.body, /evil\/image/, 'the filter is case-insensitive and drops the rest');

  const paged = await v.get('/ui/?n=1');
  t.match(paged.body, /app\/web/);
  t.notMatch(paged.body, /evil\/image/);
  t.match(paged.body, /href="\/ui\/\?n=1&amp;last=app%2Fweb" rel="next"/);
  const page2 = await v.get('/ui/?n=1&last=app%2Fweb');
  t.match(page2.body, /evil\/image/);
  t.notMatch(page2.body, /rel="next"/);

  const repo = await v.get('/ui/r/app/web');
  t.equal(repo.status, 200);
  t.match(repo.body, /docker pull 127\.0\.0\.1:\d+\/app\/web:1\.0/, 'pull command with the Host the client used');

  const evil = await v.get('/ui/r/evil/image/-/image/latest');
  t.equal(evil.status, 200);
  t.notOk(evil.body.includes(HOSTILE_LABEL), 'the label is not markup');
  t.notOk(evil.body.includes(HOSTILE_ANNOTATION), 'the annotation is not markup');
  t.ok(evil.body.includes('&lt;script&gt;alert(&quot;label&quot;)&lt;/script&gt;'), 'the label is shown as text');
  t.ok(evil.body.includes('&lt;img src=x onerror=alert(1)&gt;'), 'the annotation is shown as text');

  const assets = await v.get('/ui/assets/ui.css');
  t.equal(assets.status, 200);
  t.match(assets.headers.get('content-type'), /^text\/css/);
  t.match(assets.body, /prefers-color-scheme: dark/);
  const script = await v.get('/ui/assets/ui.js');
  t.equal(script.status, 200);
  t.match(script.headers.get('content-type'), /^text\/javascript/);

  t.test('CSRF: a delete without the token of this cookie is refused', async (t) => {
    const confirm = await v.get('/ui/r/app/web/-/delete?tag=1.0');
    t.equal(confirm.status, 200, 'the confirmation page');
    t.match(confirm.body, /This deletes the tag <code>1\.0<\/code>/);
    const token = Visitor.csrf(confirm);
    t.equal((await v.post('/ui/r/app/web/-/delete', { tag: '1.0' })).status, 403, 'no token');
    t.equal((await v.post('/ui/r/app/web/-/delete', { tag: '1.0', csrf: 'x'.repeat(43) })).status, 403, 'a wrong token');
    const other = new Visitor(berth.url);
    await other.get('/ui/');
    t.equal((await other.post('/ui/r/app/web/-/delete', { tag: '1.0', csrf: token })).status, 403, "another visitor's token");
    t.equal((await client.getManifest('app/web', '1.0')).status, 200, 'the tag is still there');
    const done = await v.post('/ui/r/app/web/-/delete', { tag: '1.0', csrf: token });
    t.equal(done.status, 303);
    t.match(done.headers.get('location'), /^\/ui\/r\/app\/web\?deleted=/);
    t.equal((await client.getManifest('app/web', '1.0')).status, 404, 'deleted');
  });

  t.test('repository delete shows pending, then done', async (t) => {
    const confirm = await v.get('/ui/r/evil/image/-/delete?repository=evil%2Fimage');
    const res = await v.post('/ui/r/evil/image/-/delete', { repository: 'evil/image', csrf: Visitor.csrf(confirm) });
    t.equal(res.status, 303);
    const job = res.headers.get('location') ?? '';
    t.match(job, /^\/ui\/jobs\/[A-Za-z0-9_-]+$/);
    let state = '';
    for (let i = 0; i < 100 && state !== 'done'; i++) {
      const p = await v.get(job);
      state = /data-state="([a-z]+)"/.exec(p.body)?.[1] ?? '';
      if (state !== 'done') await new Promise((r) => setTimeout(r, 50));
    }
    t.equal(state, 'done');
    t.equal((await new Visitor(berth.url).get(job)).status, 404, 'another visitor does not see the job');
    t.notMatch((await v.get('/ui/')).body, /evil\/image/);
  });

  t.test('bad names and unknown pages are HTML errors, not stack traces', async (t) => {
    const unknown = await v.get('/ui/r/no/such');
    t.equal(unknown.status, 404);
    t.match(unknown.body, /<h1>Not found<\/h1>/);
    const bad = await v.get('/ui/r/..%2f..%2fetc');
    t.equal(bad.status, 400);
    t.notMatch(bad.body, /at .*\.js:\d+/);
    t.equal((await v.get('/ui/nothing')).status, 404);
  });
});

t.test('ui.enabled: false serves no UI', async (t) => {
  const berth = await startBerth(t, { ui: { enabled: false } });
  t.equal(berth.config.warnings.length, 0, 'ui.enabled is a known key');
  const v = new Visitor(berth.url);
  t.equal((await v.get('/')).status, 404);
  t.equal((await v.get('/ui/')).status, 404);
});

t.test('with the token server: login, per-user views, delete rights, rate-limited logins', async (t) => {
  const dir = await tempDir(t, 'berth-ui-auth-');
  const users = await writeUsers(dir);
  const berth = await startBerth(t, {
    auth: {
      ratelimit: { failures: 3, window: '1m' },
      builtin: {
        users,
        rules: [
          { who: 'anonymous', repository: 'public/**', actions: ['pull'] },
          { who: 'alice', repository: '**', actions: ['*'] },
          { who: 'alice', registry: 'catalog', actions: ['*'] },
          { who: 'bob', repository: 'team/**', actions: ['pull'] },
        ],
      },
    },
  });
  // Push as alice with a token.
  const tokenRes = await fetch(
    `${berth.url}/auth/token?service=berth&scope=${encodeURIComponent('repository:team/app:pull,push repository:private/secret:pull,push repository:public/base:pull,push')}`,
    {
      headers: { authorization: `Basic ${Buffer.from(`alice:${TEAM_USERS.alice}`).toString('base64')}` },
    },
  );
  const aliceToken = ((await tokenRes.json()) as { token: string }).token;
  const origFetch = globalThis.fetch;
  globalThis.fetch = (input, init = {}) =>
    origFetch(input, { ...init, headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${aliceToken}` } });
  try {
    const client = new RegistryClient(berth.url);
    for (const repo of ['team/app', 'private/secret', 'public/base']) await client.pushImage(repo, '1', [randomLayer()]);
  } finally {
    globalThis.fetch = origFetch;
  }

  const anon = new Visitor(berth.url);
  const anonList = await anon.get('/ui/');
  t.equal(anonList.status, 200, 'anonymous clients browse what anonymous rules let them pull');
  t.match(anonList.body, /public\/base/);
  t.notMatch(anonList.body, /team\/app|private\/secret/);
  t.match(anonList.body, /href="\/ui\/login"/);
  t.equal((await anon.get('/ui/r/private/secret')).status, 404, 'a repository anonymous may not pull does not exist for them');
  t.equal((await anon.get('/ui/usage')).status, 403);

  const bob = new Visitor(berth.url);
  const form = await bob.get('/ui/login');
  t.equal((await bob.post('/ui/login', { username: 'bob', password: TEAM_USERS.bob as string })).status, 403, 'login without the CSRF token');
  const wrong = await bob.post('/ui/login', { username: 'bob', password: 'nope', csrf: Visitor.csrf(form) });
  t.equal(wrong.status, 401);
  t.match(wrong.body, /Invalid user name or password/);
  const before = bob.cookie;
  const ok = await bob.post('/ui/login', { username: 'bob', password: TEAM_USERS.bob as string, csrf: Visitor.csrf(form), next: '/ui/r/team/app' });
  t.equal(ok.status, 303);
  t.equal(ok.headers.get('location'), '/ui/r/team/app');
  t.match(ok.headers.get('set-cookie'), /HttpOnly; SameSite=Strict; Max-Age=/);
  t.not(bob.cookie, before, 'a login issues a new session id');
  const bobList = await bob.get('/ui/');
  t.match(bobList.body, /Signed in as <strong>bob<\/strong>/);
  t.match(bobList.body, /team\/app/);
  t.match(bobList.body, /public\/base/);
  t.notMatch(bobList.body, /private\/secret/, 'bob never sees a repository he may not pull');
  t.notMatch((await bob.get('/ui/?q=secret')).body, /private\/secret/);
  const bobRepo = await bob.get('/ui/r/team/app');
  t.equal(bobRepo.status, 200);
  t.notMatch(bobRepo.body, /Delete/, 'no delete controls without the delete right');
  const bobDelete = await bob.post('/ui/r/team/app/-/delete', { tag: '1', csrf: Visitor.csrf(bobList) });
  t.equal(bobDelete.status, 403, 'and the delete itself is refused');
  t.notMatch((await bob.get('/ui/')).body, /href="\/ui\/usage"/, 'no storage page without the catalog right');

  const alice = new Visitor(berth.url);
  const aliceForm = await alice.get('/ui/login');
  t.equal((await alice.post('/ui/login', { username: 'alice', password: TEAM_USERS.alice as string, csrf: Visitor.csrf(aliceForm) })).status, 303);
  const aliceRepo = await alice.get('/ui/r/private/secret');
  t.equal(aliceRepo.status, 200);
  t.match(aliceRepo.body, /Delete/);
  const usage = await alice.get('/ui/usage');
  t.equal(usage.status, 200);
  t.match(usage.body, /private\/secret/);

  const logout = await bob.post('/ui/logout', { csrf: Visitor.csrf(bobList) });
  t.equal(logout.status, 303);
  const after = await bob.get('/ui/');
  t.notMatch(after.body, /team\/app/, 'logged out: back to the anonymous view');

  const mallory = new Visitor(berth.url);
  const mForm = await mallory.get('/ui/login');
  // Failures count per address and per account, and no success clears them: bob's wrong password above was the
  // first of this address's three.
  for (let i = 0; i < 2; i++)
    t.equal((await mallory.post('/ui/login', { username: 'alice', password: `guess${i}`, csrf: Visitor.csrf(mForm) })).status, 401);
  const limited = await mallory.post('/ui/login', { username: 'alice', password: TEAM_USERS.alice as string, csrf: Visitor.csrf(mForm) });
  t.equal(limited.status, 429, 'failed logins are limited like the token server');
  t.ok(limited.headers.get('retry-after'));
});

t.test('with htpasswd (Basic) auth: everything behind the login form', async (t) => {
  const dir = await tempDir(t, 'berth-ui-htpasswd-');
  const users = await writeUsers(dir);
  const berth = await startBerth(t, { auth: { htpasswd: { realm: 'berth', path: users } } });
  const v = new Visitor(berth.url);
  const first = await v.get('/ui/r/a/b');
  t.equal(first.status, 303);
  t.equal(first.headers.get('location'), '/ui/login?next=%2Fui%2Fr%2Fa%2Fb');
  const form = await v.get('/ui/login?next=%2Fui%2F');
  const res = await v.post('/ui/login', {
    username: 'bob',
    password: TEAM_USERS.bob as string,
    csrf: Visitor.csrf(form),
    next: 'https://evil.example/',
  });
  t.equal(res.status, 303);
  t.equal(res.headers.get('location'), '/ui/', 'next is only ever a path under /ui/');
  const again = new Visitor(berth.url);
  const form2 = await again.get('/ui/login');
  const res2 = await again.post('/ui/login', {
    username: 'bob',
    password: TEAM_USERS.bob as string,
    csrf: Visitor.csrf(form2),
    next: '/ui/..//evil.example/',
  });
  t.equal(res2.headers.get('location'), '/ui/', 'no dot segments or double slashes either');
  const list = await v.get('/ui/');
  t.equal(list.status, 200);
  t.match(list.body, /Signed in as <strong>bob<\/strong>/);
});

t.test('mirror page: upstreams, health, hits and misses, cached repositories', async (t) => {
  const upstream = await startBerth(t);
  await new RegistryClient(upstream.url).pushImage('team/app', '1', [randomLayer(4096)]);
  const mirror = await startBerth(t, { proxy: { upstreams: [{ name: 'upstream.example', url: upstream.url, tagttl: '1h', timeout: '5s' }] } });
  const v = new Visitor(mirror.url);
  const empty = await v.get('/ui/mirror');
  t.equal(empty.status, 200);
  t.match(empty.body, /href="\/ui\/mirror"/, 'the navigation offers the mirror page');
  t.match(empty.body, /<strong>upstream\.example<\/strong>/);
  t.match(empty.body, /<span class="tag">not asked yet<\/span>/, 'the upstream state before the first request');
  t.match(empty.body, /Nothing cached yet/);
  const client = new RegistryClient(mirror.url);
  await client.pull('team/app', '1');
  await client.pull('team/app', '1');
  // The cached repository enters the catalog index when its manifest is cached (in the background).
  let page = await v.get('/ui/mirror');
  for (let i = 0; i < 50 && !page.body.includes('href="/ui/r/team/app"'); i++) {
    await new Promise((r) => setTimeout(r, 50));
    page = await v.get('/ui/mirror');
  }
  const cells = /<strong>upstream\.example<\/strong>[\s\S]*?<td class="num">(\d+)<\/td><td class="num">(\d+)<\/td>/.exec(page.body);
  t.ok(cells, 'hits and misses are shown');
  t.ok(Number(cells?.[1]) > 0, 'the second pull hit the cache');
  t.ok(Number(cells?.[2]) > 0, 'the first pull missed it');
  t.match(page.body, /href="\/ui\/r\/team\/app">team\/app</, 'the cached repository is listed');
  t.match(page.body, /<span class="tag">reachable<\/span>/, 'after the pulls: reachable');
  t.match(page.body, /Served from the cache since start: <span title="[\d,]+ bytes">/);
  const plain = await new Visitor(upstream.url).get('/ui/');
  t.notMatch(plain.body, /href="\/ui\/mirror"/, 'no mirror page without a proxy');
  await upstream.close();
  const cold = await fetch(`${mirror.url}/v2/team/other/manifests/1`);
  t.equal(cold.status, 503, 'the upstream is gone: uncached content is unavailable');
  await cold.arrayBuffer();
  const down = await v.get('/ui/mirror');
  t.match(down.body, /<span class="tag">down<\/span> since <time datetime="[^"]+"/, 'the page says since when it is down');
  t.match(down.body, /upstream upstream\.example unreachable/, 'and why');
});
