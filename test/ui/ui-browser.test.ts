import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import t from 'tap';
import { OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, RegistryClient, randomLayer } from '../helpers/registry-client.js';
import { TEAM_USERS, writeUsers } from '../helpers/auth.js';
import { startBerth } from '../helpers/berth.js';
import { makeImageLayout } from '../helpers/oci-layout.js';
import { tempDir } from '../helpers/ports.js';
import { skopeo } from '../helpers/skopeo.js';

/**
 * The web UI in a real browser: Debian's chromium driven by puppeteer-core, after skopeo pushes. One browser for the
 * file, one page reused. Screenshots (for a human to look at) go to /tmp only, with BERTH_UI_SCREENSHOTS=1.
 * Navigations wait for `load`: the server renders every page, and its one script (a module, so it runs before
 * DOMContentLoaded) fetches only when the filter is typed into, which the test waits for by what it changes.
 */

const CHROMIUM = '/usr/bin/chromium';
const HOSTILE_LABEL = '<script>window.__pwned = "label"; alert("label")</script>';
const HOSTILE_ANNOTATION = '<img src=x onerror="window.__pwned = \'annotation\'; alert(1)">';

async function shot(page: Page, name: string, width = 1280): Promise<void> {
  if (process.env.BERTH_UI_SCREENSHOTS !== '1') return;
  await page.setViewport({ width, height: 900 });
  await page.screenshot({ path: `/tmp/berth-ui-${name}.png`, fullPage: true });
  await page.setViewport({ width: 1280, height: 900 });
}

/** Texts of the elements matching `selector`. */
async function texts(page: Page, selector: string): Promise<string[]> {
  return page.$$eval(selector, (els) => els.map((e) => (e.textContent ?? '').trim()));
}

/** What has the keyboard focus: `tag.class:text` or `tag#id`. */
async function focused(page: Page): Promise<{ tag: string; id: string; cls: string; text: string; href: string }> {
  // A string: this runs in the page, whose DOM types the Node-side compiler does not know.
  return page.evaluate<[], () => { tag: string; id: string; cls: string; text: string; href: string }>(`(() => {
    const e = document.activeElement;
    return {
      tag: e ? e.tagName.toLowerCase() : '',
      id: (e && e.id) || '',
      cls: (e && typeof e.className === 'string' && e.className) || '',
      text: ((e && e.textContent) || '').trim(),
      href: (e && e.tagName === 'A' && e.getAttribute('href')) || '',
    };
  })()`);
}

t.test('the web UI in chromium', async (t) => {
  const userData = await mkdtemp(join(tmpdir(), 'berth-chromium-'));
  const browser: Browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--user-data-dir=${userData}`,
    ],
  });
  t.teardown(async () => {
    await browser.close();
    await rm(userData, { recursive: true, force: true });
  });
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  const dialogs: string[] = [];
  const consoleErrors: string[] = [];
  let acceptDialogs = false;
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void (acceptDialogs ? d.accept() : d.dismiss());
  });
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  t.test('browsing what skopeo pushed', async (t) => {
    const berth = await startBerth(t);
    const host = berth.url.replace('http://', '');
    const layouts = await tempDir(t, 'berth-ui-layouts-');
    const oci = await makeImageLayout(join(layouts, 'oci'), { layers: [4096, 2048], tag: '1.0' });
    await skopeo(['copy', '--dest-tls-verify=false', `oci:${join(layouts, 'oci')}:1.0`, `docker://${host}/shop/oci-app:1.0`]);
    await makeImageLayout(join(layouts, 'docker'), { layers: [3000], tag: '2.0', gzip: true });
    await skopeo([
      'copy',
      '--dest-tls-verify=false',
      '--format',
      'v2s2',
      `oci:${join(layouts, 'docker')}:2.0`,
      `docker://${host}/shop/docker-app:2.0`,
    ]);
    await makeImageLayout(join(layouts, 'multi'), {
      layers: [1024],
      tag: 'latest',
      platforms: [
        { os: 'linux', architecture: 'amd64' },
        { os: 'linux', architecture: 'arm64' },
      ],
    });
    await skopeo(['copy', '--all', '--dest-tls-verify=false', `oci:${join(layouts, 'multi')}:latest`, `docker://${host}/shop/multi:latest`]);
    const client = new RegistryClient(berth.url);
    const subject = await client.getManifest('shop/oci-app', '1.0');
    const sbom = await client.pushReferrer(
      'shop/oci-app',
      { mediaType: OCI_MANIFEST, digest: subject.digest as string, size: Buffer.byteLength(JSON.stringify(subject.body)) },
      'application/spdx+json',
      Buffer.from('{"spdxVersion":"SPDX-2.3"}'),
    );
    const dangling = await client.pushImage('shop/oci-app', null, [randomLayer()]);
    // An image whose labels, annotations and history were written by someone hostile.
    const layer = await client.pushBlob('evil/image', randomLayer());
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Labels: { 'org.example.note': HOSTILE_LABEL, [HOSTILE_ANNOTATION]: 'key' } },
        history: [{ created_by: HOSTILE_ANNOTATION }],
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
        annotations: { 'org.opencontainers.image.description': HOSTILE_ANNOTATION, 'org.example.other': HOSTILE_LABEL },
      },
      OCI_MANIFEST,
    );

    await t.test('the repository list, and the filter as you type', async (t) => {
      await page.goto(`${berth.url}/`, { waitUntil: 'load' });
      t.equal(new URL(page.url()).pathname, '/ui/', '/ redirects to /ui/');
      t.strictSame(await texts(page, '#repo-list td.name a'), ['evil/image', 'shop/docker-app', 'shop/multi', 'shop/oci-app']);
      await shot(page, 'repositories');
      await shot(page, 'repositories-phone', 390);
      await page.type('#filter', 'MULTI');
      await page.waitForFunction("document.querySelectorAll('#repo-list td.name a').length === 1", { timeout: 10_000 });
      t.strictSame(await texts(page, '#repo-list td.name a'), ['shop/multi'], 'the list follows the filter without a submit');
      t.match(page.url(), /\?q=MULTI$/, 'the address keeps the filter');
    });

    await t.test('a repository: tags newest first, pull commands, untagged manifests', async (t) => {
      await page.goto(`${berth.url}/ui/r/shop/oci-app`, { waitUntil: 'load' });
      t.strictSame(await texts(page, 'tbody td.name a'), ['1.0']);
      const pulls = await texts(page, '.pull code');
      t.strictSame(pulls, [`docker pull ${host}/shop/oci-app:1.0`]);
      t.equal(await page.$eval('button.copy', (b) => b.hasAttribute('hidden')), false, 'the script shows the copy buttons');
      await page.click('.switch a');
      await page.waitForSelector('tbody td.name a.muted');
      t.match(page.url(), /untagged=1/);
      const rows = await page.$$eval('tbody tr', (trs) => trs.map((tr) => tr.textContent ?? ''));
      t.ok(
        rows.some((r) => r.includes(dangling.manifest.digest.slice(0, 19))),
        'the untagged manifest is listed',
      );
      await shot(page, 'repository');
    });

    await t.test('an index: its platforms, each a link to its manifest', async (t) => {
      // skopeo re-serialises the index: what the registry holds is what the page shows.
      const pushed = await client.getManifest('shop/multi', 'latest');
      const children = (pushed.body?.manifests as { digest: string }[]).map((m) => m.digest);
      await page.goto(`${berth.url}/ui/r/shop/multi/-/image/latest`, { waitUntil: 'load' });
      t.strictSame(await texts(page, 'h2 + .table-wrap tbody td:first-child a'), ['linux/amd64', 'linux/arm64']);
      t.strictSame(
        (await texts(page, '.pull code')).sort(),
        [`docker pull ${host}/shop/multi:latest`, `docker pull ${host}/shop/multi@${pushed.digest as string}`].sort(),
      );
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('xpath/.//a[text()="linux/arm64"]')]);
      t.match(page.url(), new RegExp(`/ui/r/shop/multi/-/image/${encodeURIComponent(children[1] as string)}$`));
      const facts = await page.$eval('dl.facts', (d) => d.textContent ?? '');
      t.match(facts, /linux\/arm64/);
      t.equal((await texts(page, 'h2')).includes('Layers'), true);
    });

    await t.test('a manifest: layers, config and referrers by artifact type', async (t) => {
      await page.goto(`${berth.url}/ui/r/shop/oci-app/-/image/1.0`, { waitUntil: 'load' });
      const layerRows = await page.$$eval('xpath/.//h2[text()="Layers"]/following-sibling::div[1]//tbody/tr', (trs) => trs.length);
      t.equal(layerRows, oci.images[0]?.layers.length);
      t.ok((await texts(page, 'h3 code')).includes('application/spdx+json'), 'the SBOM under its artifact type');
      t.ok((await page.content()).includes(sbom.manifest.digest.slice(7, 19)));
      await shot(page, 'image');
      await page.goto(`${berth.url}/ui/r/shop/docker-app/-/image/2.0`, { waitUntil: 'load' });
      t.match(
        await page.$eval('dl.facts', (d) => d.textContent ?? ''),
        /application\/vnd\.docker\.distribution\.manifest\.v2\+json/,
        'Docker schema 2',
      );
    });

    await t.test('hostile labels and annotations are shown as text and never run', async (t) => {
      dialogs.length = 0;
      consoleErrors.length = 0;
      await page.goto(`${berth.url}/ui/r/evil/image/-/image/latest`, { waitUntil: 'load' });
      t.strictSame(dialogs, [], 'no alert');
      t.equal(await page.evaluate('window.__pwned ?? null'), null, 'no script ran');
      t.equal(await page.$$eval('main img, main script', (e) => e.length), 0, 'no element was injected');
      const body = await page.$eval('main', (m) => m.textContent ?? '');
      t.ok(body.includes(HOSTILE_LABEL), 'the label is shown literally');
      t.ok(body.includes(HOSTILE_ANNOTATION), 'the annotation is shown literally');
      t.strictSame(consoleErrors, [], 'nothing was blocked or failed (no injected request or inline script)');
      await shot(page, 'hostile');
    });

    await t.test('the keyboard path: skip link, filter, links, copy buttons; Enter follows', async (t) => {
      await page.goto(`${berth.url}/ui/`, { waitUntil: 'load' });
      await page.keyboard.press('Tab');
      t.equal((await focused(page)).text, 'Skip to content', 'the skip link comes first');
      const seen: string[] = [];
      let target = false;
      for (let i = 0; i < 15 && !target; i++) {
        await page.keyboard.press('Tab');
        const f = await focused(page);
        seen.push(f.id || f.href || f.text);
        if (f.href === '/ui/r/shop/docker-app') target = true;
      }
      t.ok(seen.includes('filter'), 'Tab reaches the filter');
      t.ok(target, 'and a repository link');
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.keyboard.press('Enter')]);
      t.match(page.url(), /\/ui\/r\/shop\/docker-app$/, 'Enter follows it');
      const context = browser.defaultBrowserContext();
      await context.overridePermissions(berth.url, ['clipboard-read', 'clipboard-write', 'clipboard-sanitized-write']);
      let copy = false;
      for (let i = 0; i < 30 && !copy; i++) {
        await page.keyboard.press('Tab');
        copy = (await focused(page)).cls.includes('copy');
      }
      t.ok(copy, 'Tab reaches a copy button');
      await page.keyboard.press('Enter');
      await page.waitForFunction("document.activeElement && document.activeElement.textContent !== 'Copy'", { timeout: 5000 });
      t.equal((await focused(page)).text, 'Copied');
      t.equal(
        await page.evaluate('navigator.clipboard.readText()'),
        `docker pull ${host}/shop/docker-app:2.0`,
        'the pull command is on the clipboard',
      );
    });

    await t.test('deleting a tag through the confirmation page, with script turned off', async (t) => {
      await page.setJavaScriptEnabled(false);
      t.teardown(() => page.setJavaScriptEnabled(true));
      dialogs.length = 0;
      await page.goto(`${berth.url}/ui/r/shop/oci-app`, { waitUntil: 'load' });
      t.equal(
        await page.evaluate(`getComputedStyle(document.querySelector('button.copy')).display`),
        'none',
        'no copy button without script; the command is there to select',
      );
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('a[data-field-tag="1.0"]')]);
      t.match(page.url(), /\/ui\/r\/shop\/oci-app\/-\/delete\?tag=1\.0$/, 'the delete link leads to the confirmation page');
      t.strictSame(dialogs, []);
      t.match(await page.$eval('main', (m) => m.textContent ?? ''), /This deletes the tag 1\.0 of shop\/oci-app/);
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('form button[type=submit]')]);
      t.match(page.url(), /\/ui\/r\/shop\/oci-app\?deleted=/);
      t.match(await page.$eval('.notice', (n) => n.textContent ?? ''), /Deleted tag 1\.0/);
      t.equal((await client.getManifest('shop/oci-app', '1.0')).status, 404);
    });

    await t.test('deleting a repository after a confirm dialog: pending, then done', async (t) => {
      await page.goto(`${berth.url}/ui/r/shop/docker-app`, { waitUntil: 'load' });
      dialogs.length = 0;
      acceptDialogs = true;
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('a[data-field-repository]')]);
      acceptDialogs = false;
      t.strictSame(dialogs, ['Delete the repository shop/docker-app with all its tags?']);
      t.match(page.url(), /\/ui\/jobs\//);
      await page.waitForSelector('[data-state="done"]', { timeout: 20_000 });
      await shot(page, 'deleted');
      await page.goto(`${berth.url}/ui/`, { waitUntil: 'load' });
      t.notOk((await texts(page, '#repo-list td.name a')).includes('shop/docker-app'));
    });
  });

  t.test('with the token server: log in, see only what you may pull, log out', async (t) => {
    const dir = await tempDir(t, 'berth-ui-browser-auth-');
    const users = await writeUsers(dir);
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
    });
    const tokenRes = await fetch(
      `${berth.url}/auth/token?service=berth&scope=${encodeURIComponent('repository:team/app:pull,push repository:private/secret:pull,push')}`,
      {
        headers: { authorization: `Basic ${Buffer.from(`alice:${TEAM_USERS.alice}`).toString('base64')}` },
      },
    );
    const token = ((await tokenRes.json()) as { token: string }).token;
    const host = berth.url.replace('http://', '');
    const layouts = await tempDir(t, 'berth-ui-layouts-');
    await makeImageLayout(layouts, { layers: [1024], tag: '1' });
    for (const repo of ['team/app', 'private/secret']) {
      await skopeo(['copy', '--dest-tls-verify=false', '--dest-registry-token', token, `oci:${layouts}:1`, `docker://${host}/${repo}:1`]);
    }

    await page.goto(`${berth.url}/ui/`, { waitUntil: 'load' });
    t.strictSame(await texts(page, '#repo-list td.name a'), [], 'anonymous visitors see what anonymous may pull: nothing here');
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('.who a[href="/ui/login"]')]);
    await page.type('input[name=username]', 'bob');
    await page.type('input[name=password]', 'wrong');
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.keyboard.press('Enter')]);
    t.match(await page.$eval('.notice', (n) => n.textContent ?? ''), /Invalid user name or password/);
    await page.click('input[name=password]', { count: 3 });
    await page.keyboard.press('Backspace');
    await page.type('input[name=password]', TEAM_USERS.bob as string);
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('button[type=submit]')]);
    t.equal(new URL(page.url()).pathname, '/ui/');
    t.match(await page.$eval('.who', (w) => w.textContent ?? ''), /Signed in as bob/);
    t.strictSame(await texts(page, '#repo-list td.name a'), ['team/app'], 'bob sees only what he may pull');
    const cookies = await browser.defaultBrowserContext().cookies();
    const session = cookies.find((c) => c.name === 'berth_ui');
    t.ok(session?.httpOnly, 'the session cookie is HttpOnly');
    t.equal(session?.sameSite, 'Strict');
    t.equal(await page.evaluate('document.cookie'), '', 'and invisible to script');
    await page.goto(`${berth.url}/ui/r/team/app`, { waitUntil: 'load' });
    t.equal(await page.$$eval('a.danger', (a) => a.length), 0, 'no delete controls for bob');
    await shot(page, 'bob');
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('.who button[type=submit]')]);
    t.equal(new URL(page.url()).pathname, '/ui/', 'logged out');
    t.strictSame(await texts(page, '#repo-list td.name a'), [], 'back to the anonymous view');
    await page.goto(`${berth.url}/ui/r/team/app`, { waitUntil: 'load' });
    t.match(await page.$eval('h1', (h) => h.textContent ?? ''), /Not found/, 'the session is gone');
    await page.goto(`${berth.url}/ui/login?next=${encodeURIComponent('/ui/r/team/app')}`, { waitUntil: 'load' });

    await page.type('input[name=username]', 'alice');
    await page.type('input[name=password]', TEAM_USERS.alice as string);
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.keyboard.press('Enter')]);
    t.match(page.url(), /\/ui\/r\/team\/app$/, 'back where the login began');
    await page.goto(`${berth.url}/ui/`, { waitUntil: 'load' });
    t.strictSame(await texts(page, '#repo-list td.name a'), ['private/secret', 'team/app'], 'alice sees both');
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('.who button[type=submit]')]);
  });
});
