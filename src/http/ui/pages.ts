import type { ImageDetail, RepositorySummary, TagSummary, Usage } from '../../services/catalog/browse.js';
import { shortDigest, sizeCell, timeCell } from './format.js';
import { html, type Html } from './html.js';

/**
 * The web UI's pages as HTML, rendered on the server. Every value is escaped by {@link html}; nothing here reads a
 * request or storage: the routes (ui-routes.ts) gather the data and the viewer's rights, the pages only show them.
 */

/** Who is looking and what the layout offers them. */
export interface Viewer {
  /** Logged-in account, absent when anonymous or when the registry has no auth. */
  account?: string;
  /** The registry has auth: show log in / log out. */
  authEnabled: boolean;
  /** Berth can check passwords (htpasswd users): the login form works. */
  loginAvailable: boolean;
  /** The CSRF token every form carries. */
  csrf: string;
  /** May see the storage page (the `registry:catalog:*` right). */
  canUsage: boolean;
  /** A `proxy` is configured: show the mirror page. */
  mirror: boolean;
}

/** `/ui/r/<name>` with each path segment escaped for a URL (names are validated, but tags and digests go the same way). */
export function repoUrl(name: string, rest = ''): string {
  return `/ui/r/${name.split('/').map(encodeURIComponent).join('/')}${rest}`;
}

/** `/ui/r/<name>/-/image/<reference>`. */
export function imageUrl(name: string, reference: string): string {
  return repoUrl(name, `/-/image/${encodeURIComponent(reference)}`);
}

function copyButton(text: string, label: string): Html {
  // Hidden until the script runs: without it the command is still there to select.
  return html`<button type="button" class="copy" data-copy="${text}" aria-label="${label}" hidden>Copy</button>`;
}

function pullLine(command: string, label: string): Html {
  return html`<div class="pull"><code>${command}</code>${copyButton(command, label)}</div>`;
}

/** The frame of every page: skip link, navigation, who is logged in, the content. */
export function layout(viewer: Viewer, title: string, content: Html, options: { notice?: Html; refreshSeconds?: number } = {}): Html {
  const who = viewer.account
    ? html`<span>Signed in as <strong>${viewer.account}</strong></span>
        <form class="inline" method="post" action="/ui/logout"><input type="hidden" name="csrf" value="${viewer.csrf}"><button type="submit">Log out</button></form>`
    : viewer.authEnabled && viewer.loginAvailable
      ? html`<a href="/ui/login">Log in</a>`
      : '';
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${options.refreshSeconds ? html`<meta http-equiv="refresh" content="${options.refreshSeconds}">` : ''}
<title>${title} · berth</title>
<link rel="stylesheet" href="/ui/assets/ui.css">
<script type="module" src="/ui/assets/ui.js"></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
<a class="brand" href="/ui/">berth</a>
<nav aria-label="Main"><ul>
<li><a href="/ui/">Repositories</a></li>
${viewer.canUsage ? html`<li><a href="/ui/usage">Storage</a></li>` : ''}
${viewer.mirror && viewer.canUsage ? html`<li><a href="/ui/mirror">Mirror</a></li>` : ''}
</ul></nav>
<div class="who">${who}</div>
</header>
<main id="main" tabindex="-1">
${options.notice ?? ''}
${content}
</main>
</body>
</html>
`;
}

/** A notice box above the content. */
export function notice(kind: 'info' | 'ok' | 'error', text: string): Html {
  return html`<p class="notice ${kind}" role="${kind === 'error' ? 'alert' : 'status'}">${text}</p>`;
}

/** The repository list with its filter and `n`/`last` paging links. */
export function repositoriesPage(data: { repositories: RepositorySummary[]; next: string | null; q: string; n: number; last: string | null }): Html {
  const query = (extra: Record<string, string>) => {
    const p = new URLSearchParams();
    if (data.q) p.set('q', data.q);
    if (data.n !== DEFAULT_PAGE) p.set('n', String(data.n));
    for (const [k, v] of Object.entries(extra)) p.set(k, v);
    const s = p.toString();
    return s ? `/ui/?${s}` : '/ui/';
  };
  const rows = data.repositories.map(
    (r) => html`<tr>
<td class="name"><a href="${repoUrl(r.name)}">${r.name}</a></td>
<td class="num">${r.tagCount}</td>
<td class="num">${sizeCell(r.size)}</td>
<td class="hide-narrow">${timeCell(r.lastPush)}</td>
</tr>`,
  );
  const empty = data.q ? html`No repository matches “${data.q}”.` : html`No repositories yet. Push one with <code>docker push</code>.`;
  return html`<h1>Repositories</h1>
<form class="filter" method="get" action="/ui/" role="search">
<label for="filter" class="offscreen">Filter repositories</label>
<input id="filter" type="search" name="q" value="${data.q}" placeholder="Filter by name" autocomplete="off" data-filter>
<button type="submit">Filter</button>
</form>
<div id="repo-list">
${
  data.repositories.length === 0
    ? html`<p class="muted">${empty}</p>`
    : html`<div class="table-wrap"><table>
<thead><tr><th scope="col">Name</th><th scope="col" class="num">Tags</th><th scope="col" class="num">Size</th><th scope="col" class="hide-narrow">Last push</th></tr></thead>
<tbody>${rows}</tbody>
</table></div>`
}
<nav class="pager" aria-label="Pages">
${data.last !== null ? html`<a href="${query({})}">First page</a>` : ''}
${data.next !== null ? html`<a href="${query({ last: data.next })}" rel="next">Next page</a>` : ''}
</nav>
</div>`;
}

/** Default page size of the repository list. */
export const DEFAULT_PAGE = 50;

/** One repository: its tags newest first (or every manifest with `untagged`), pull commands, delete controls. */
export function repositoryPage(data: { name: string; host: string; tags: TagSummary[]; untagged: boolean; canDelete: boolean; csrf: string }): Html {
  const { name, host } = data;
  const rows = data.tags.map((t) => {
    const ref = t.name || t.digest;
    const pull = t.name ? `docker pull ${host}/${name}:${t.name}` : `docker pull ${host}/${name}@${t.digest}`;
    const del = data.canDelete
      ? t.name
        ? deleteLink(name, { tag: t.name }, `Delete tag ${t.name} of ${name}?`, data.csrf, `Delete tag ${t.name}`)
        : deleteLink(name, { digest: t.digest }, `Delete manifest ${t.digest} of ${name}?`, data.csrf, `Delete manifest ${t.digest}`)
      : '';
    return html`<tr>
<td class="name">${t.name ? html`<a href="${imageUrl(name, ref)}">${t.name}</a>` : html`<a href="${imageUrl(name, ref)}" class="muted">untagged</a>`}</td>
<td><a href="${imageUrl(name, t.digest)}" aria-label="Manifest ${t.digest}">${shortDigest(t.digest)}</a></td>
<td class="num">${sizeCell(t.size)}</td>
<td class="hide-narrow">${t.platforms.map((p) => html`<span class="tag">${p}</span>`)}</td>
<td class="hide-narrow">${timeCell(t.pushed)}</td>
<td>${pullLine(pull, `Copy pull command for ${ref}`)}</td>
<td>${del}</td>
</tr>`;
  });
  const toggle = data.untagged
    ? html`<a href="${repoUrl(name)}">Show tags only</a>`
    : html`<a href="${repoUrl(name, '?untagged=1')}">Show untagged manifests too</a>`;
  return html`<p class="crumbs"><a href="/ui/">Repositories</a> /</p>
<h1>${name}</h1>
<p class="switch">${toggle}</p>
${
  data.tags.length === 0
    ? html`<p class="muted">${data.untagged ? 'No manifests.' : 'No tags.'}</p>`
    : html`<div class="table-wrap"><table>
<thead><tr><th scope="col">Tag</th><th scope="col">Digest</th><th scope="col" class="num">Size</th><th scope="col" class="hide-narrow">Platforms</th><th scope="col" class="hide-narrow">Pushed</th><th scope="col">Pull</th><th scope="col"><span class="offscreen">Actions</span></th></tr></thead>
<tbody>${rows}</tbody>
</table></div>`
}
${data.canDelete ? html`<h2>Danger zone</h2><p>${deleteLink(name, { repository: name }, `Delete the repository ${name} with all its tags?`, data.csrf, `Delete repository ${name}`, 'Delete this repository')}</p>` : ''}`;
}

/** A delete control: a link to the confirmation page, which the script turns into a confirm dialog and a POST. */
function deleteLink(
  name: string,
  what: { tag?: string; digest?: string; repository?: string },
  question: string,
  csrf: string,
  label: string,
  text = 'Delete',
): Html {
  const params = new URLSearchParams(what as Record<string, string>);
  const fields: Html[] = [html` data-field-csrf="${csrf}"`];
  for (const [k, v] of Object.entries(what)) fields.push(html` data-field-${k}="${v}"`);
  return html`<a class="button danger" href="${repoUrl(name, `/-/delete?${params.toString()}`)}" data-confirm="${question}" data-action="${repoUrl(name, '/-/delete')}"${fields} aria-label="${label}">${text}</a>`;
}

/** The confirmation page of a delete (works without script). */
export function confirmPage(data: { name: string; what: { tag?: string; digest?: string; repository?: string }; csrf: string }): Html {
  const { name, what } = data;
  const subject =
    what.tag !== undefined
      ? html`the tag <code>${what.tag}</code> of <strong>${name}</strong>`
      : what.digest !== undefined
        ? html`the manifest <code>${what.digest}</code> of <strong>${name}</strong>`
        : html`the repository <strong>${name}</strong> with all its tags and manifests`;
  const field =
    what.tag !== undefined
      ? html`<input type="hidden" name="tag" value="${what.tag}">`
      : what.digest !== undefined
        ? html`<input type="hidden" name="digest" value="${what.digest}">`
        : html`<input type="hidden" name="repository" value="${name}">`;
  return html`<p class="crumbs"><a href="/ui/">Repositories</a> / <a href="${repoUrl(name)}">${name}</a> /</p>
<h1>Delete?</h1>
<p>This deletes ${subject}. It cannot be undone; unreferenced blobs are reclaimed by the next garbage collection.</p>
<form method="post" action="${repoUrl(name, '/-/delete')}">
<input type="hidden" name="csrf" value="${data.csrf}">
${field}
<button type="submit" class="danger solid">Delete</button>
<a class="button" href="${repoUrl(name)}">Cancel</a>
</form>`;
}

/** The state of a repository delete running in the background. */
export function jobPage(job: { name: string; state: 'pending' | 'done' | 'failed'; error?: string; startedAt: string }): Html {
  const status =
    job.state === 'pending'
      ? html`<p class="notice" role="status" data-state="pending">Deleting <strong>${job.name}</strong>… (started ${timeCell(job.startedAt)}). This page refreshes until it is done.</p>`
      : job.state === 'done'
        ? html`<p class="notice ok" role="status" data-state="done">The repository <strong>${job.name}</strong> was deleted.</p>`
        : html`<p class="notice error" role="alert" data-state="failed">Deleting <strong>${job.name}</strong> failed: ${job.error ?? 'unknown error'}</p>`;
  return html`<h1>Delete repository</h1>${status}<p><a href="/ui/">Back to repositories</a></p>`;
}

function list(values: string[] | null): Html {
  if (!values || values.length === 0) return html`<span class="muted">—</span>`;
  return html`<pre class="block">${JSON.stringify(values)}</pre>`;
}

function keyValues(entries: Record<string, string>, caption: string): Html {
  const keys = Object.keys(entries).sort();
  if (keys.length === 0) return html`<p class="muted">None.</p>`;
  return html`<div class="table-wrap"><table><caption class="offscreen">${caption}</caption><tbody>
${keys.map((k) => html`<tr><th scope="row" class="mono">${k}</th><td><pre class="block">${entries[k] ?? ''}</pre></td></tr>`)}
</tbody></table></div>`;
}

/** An image: an index's platforms, or a manifest's layers and config; its referrers; pull by tag and digest. */
export function imagePage(data: { image: ImageDetail; host: string; canDelete: boolean; csrf: string }): Html {
  const { image, host } = data;
  const name = image.name;
  const byTag = image.reference !== image.digest ? `docker pull ${host}/${name}:${image.reference}` : null;
  const byDigest = `docker pull ${host}/${name}@${image.digest}`;
  const config = image.config;
  const annotations = manifestAnnotations(image.manifest);
  const referrers = new Map<string, ImageDetail['referrers']>();
  for (const r of image.referrers) {
    const key = r.artifactType || r.mediaType;
    referrers.set(key, [...(referrers.get(key) ?? []), r]);
  }
  return html`<p class="crumbs"><a href="/ui/">Repositories</a> / <a href="${repoUrl(name)}">${name}</a> /</p>
<h1>${name}${byTag ? html`:${image.reference}` : html`@${shortDigest(image.digest)}`}</h1>
<h2>Pull</h2>
${byTag ? pullLine(byTag, 'Copy pull command by tag') : ''}
${pullLine(byDigest, 'Copy pull command by digest')}
<h2>Manifest</h2>
<dl class="facts">
<dt>Digest</dt><dd><code>${image.digest}</code></dd>
<dt>Media type</dt><dd><code>${image.mediaType}</code></dd>
<dt>Size</dt><dd>${sizeCell(image.size)}</dd>
${
  config
    ? html`<dt>Created</dt><dd>${timeCell(config.created)}</dd>
<dt>Platform</dt><dd>${[config.os, config.architecture, config.variant].filter((v) => v).join('/') || '—'}</dd>`
    : ''
}
</dl>
${
  image.children.length > 0
    ? html`<h2>Platforms</h2><div class="table-wrap"><table>
<thead><tr><th scope="col">Platform</th><th scope="col">Digest</th><th scope="col" class="num">Size</th></tr></thead>
<tbody>${image.children.map((c) => html`<tr><td><a href="${imageUrl(name, c.digest)}">${c.platform || c.mediaType}</a></td><td>${shortDigest(c.digest)}</td><td class="num">${sizeCell(c.size)}</td></tr>`)}</tbody>
</table></div>`
    : ''
}
${
  image.layers.length > 0
    ? html`<h2>Layers</h2><div class="table-wrap"><table>
<thead><tr><th scope="col">#</th><th scope="col">Digest</th><th scope="col" class="hide-narrow">Media type</th><th scope="col" class="num">Size</th></tr></thead>
<tbody>${image.layers.map((l, i) => html`<tr><td class="num">${i + 1}</td><td>${shortDigest(l.digest)}</td><td class="hide-narrow"><code>${l.mediaType}</code></td><td class="num">${sizeCell(l.size)}</td></tr>`)}</tbody>
</table></div>`
    : ''
}
${
  config
    ? html`<h2>Configuration</h2>
<dl class="facts">
<dt>Entrypoint</dt><dd>${list(config.entrypoint)}</dd>
<dt>Cmd</dt><dd>${list(config.cmd)}</dd>
<dt>Env</dt><dd>${config.env.length ? html`<pre class="block">${config.env.join('\n')}</pre>` : html`<span class="muted">—</span>`}</dd>
</dl>
<h2>Labels</h2>
${keyValues(config.labels, 'Labels')}
<h2>History</h2>
${
  config.history.length === 0
    ? html`<p class="muted">None.</p>`
    : html`<div class="table-wrap"><table>
<thead><tr><th scope="col">Created</th><th scope="col">Created by</th><th scope="col" class="num">Size</th></tr></thead>
<tbody>${config.history.map((h) => html`<tr><td>${timeCell(h.created)}</td><td><pre class="block">${h.createdBy}</pre></td><td class="num">${h.emptyLayer ? html`<span class="muted">empty</span>` : sizeCell(h.size)}</td></tr>`)}</tbody>
</table></div>`
}`
    : ''
}
${Object.keys(annotations).length > 0 ? html`<h2>Annotations</h2>${keyValues(annotations, 'Annotations')}` : ''}
<h2>Referrers</h2>
${
  referrers.size === 0
    ? html`<p class="muted">No signatures, SBOMs or attestations refer to this manifest.</p>`
    : [...referrers.entries()].map(
        ([type, items]) => html`<h3><code>${type}</code></h3><ul>
${items.map((r) => html`<li><a href="${imageUrl(name, r.digest)}">${shortDigest(r.digest)}</a> ${sizeCell(r.size)}${Object.keys(r.annotations).length ? html`<div class="muted">${Object.entries(r.annotations).map(([k, v]) => html`<div><code>${k}</code>: ${v}</div>`)}</div>` : ''}</li>`)}
</ul>`,
      )
}
${data.canDelete ? html`<h2>Delete</h2><p>${deleteLink(name, { digest: image.digest }, `Delete manifest ${image.digest} of ${name}?`, data.csrf, `Delete manifest ${image.digest}`, 'Delete this manifest')}</p>` : ''}`;
}

function manifestAnnotations(manifest: unknown): Record<string, string> {
  if (typeof manifest !== 'object' || manifest === null) return {};
  const a = (manifest as { annotations?: unknown }).annotations;
  if (typeof a !== 'object' || a === null) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(a)) if (typeof v === 'string') out[k] = v;
  return out;
}

/** Storage use: per repository, reclaimable by gc, the last gc run. */
export function usagePage(usage: Usage): Html {
  const rows = [...usage.repositories].sort((a, b) => b.size - a.size);
  return html`<h1>Storage</h1>
<dl class="facts">
<dt>Total</dt><dd>${sizeCell(usage.total)}</dd>
<dt>Reclaimable by gc</dt><dd>${sizeCell(usage.reclaimable)}</dd>
<dt>Last gc</dt><dd>${usage.lastGc ? html`${timeCell(usage.lastGc.at)}, freed ${sizeCell(usage.lastGc.bytesFreed)}` : html`<span class="muted">not run since start</span>`}</dd>
</dl>
<h2>Per repository</h2>
${
  rows.length === 0
    ? html`<p class="muted">No repositories.</p>`
    : html`<div class="table-wrap"><table>
<thead><tr><th scope="col">Repository</th><th scope="col" class="num">Size</th><th scope="col" class="num">Shared with others</th></tr></thead>
<tbody>${rows.map((r) => html`<tr><td class="name"><a href="${repoUrl(r.name)}">${r.name}</a></td><td class="num">${sizeCell(r.size)}</td><td class="num">${sizeCell(r.shared)}</td></tr>`)}</tbody>
</table></div>`
}`;
}

/** The login form (POST, with the CSRF token of the visitor's cookie). */
export function loginPage(data: { csrf: string; name?: string; next?: string; available: boolean }): Html {
  if (!data.available) {
    return html`<h1>Log in</h1><p>This registry's tokens come from an external issuer; berth has no users to check a password against, so the web UI shows only what anonymous clients may pull.</p>`;
  }
  return html`<form class="login" method="post" action="/ui/login">
<h1>Log in</h1>
<input type="hidden" name="csrf" value="${data.csrf}">
${data.next ? html`<input type="hidden" name="next" value="${data.next}">` : ''}
<label>User name <input type="text" name="username" autocomplete="username" required value="${data.name ?? ''}" autofocus></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required></label>
<button type="submit" class="primary">Log in</button>
</form>`;
}

/** An error page's content. */
export function errorPage(status: number, message: string): Html {
  return html`<h1>${status === 404 ? 'Not found' : status === 403 ? 'Not allowed' : 'Something went wrong'}</h1><p class="notice error" role="alert">${message}</p><p><a href="/ui/">Back to repositories</a></p>`;
}
