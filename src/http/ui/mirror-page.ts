import type { PullThrough } from '../../proxy/index.js';
import type { Browser } from '../../services/catalog/browse.js';
import { sizeCell, timeCell } from './format.js';
import { html, type Html } from './html.js';
import { repoUrl } from './pages.js';

/** What the mirror page shows about the pull-through cache (`proxy`), gathered by the app from the proxy's accessors. */
export interface MirrorStatus {
  upstreams: {
    name: string;
    url: string;
    /** False while consecutive failures keep it offline. */
    online: boolean;
    /** The last failure, when offline. */
    lastError?: string | null;
    /** Local name prefix of its cached repositories ('' for the default upstream). */
    prefix: string;
    hits: number;
    misses: number;
  }[];
  /** Cached repositories (local names), with their size and last pull/push. */
  repositories: { name: string; size: number; lastPush: string | null }[];
  /** Response body bytes of pull-through requests served from local storage, when known. */
  bytesServed: number | null;
}

/** At most this many cached repositories are listed. */
const MAX_LISTED = 1000;

/** Gathers the mirror page's data: the proxy's upstream status, and the cached repositories the viewer may pull. */
export async function mirrorStatus(proxy: PullThrough, browser: Browser, canPull: (repo: string) => Promise<boolean>): Promise<MirrorStatus> {
  const upstreams = proxy
    .status()
    .map((u) => ({ name: u.name, url: u.url, online: u.online, lastError: u.lastFailure, prefix: u.prefix, hits: u.hits, misses: u.misses }));
  const bytesServed = proxy.status().reduce((sum, u) => sum + u.bytesServed, 0);
  const repositories: MirrorStatus['repositories'] = [];
  let last: string | undefined;
  for (let pages = 0; pages < 20 && repositories.length < MAX_LISTED; pages++) {
    const page = await browser.listRepositories({
      n: 1000,
      canPull: async (r) => proxy.upstreamOf(r) !== null && (await canPull(r)),
      ...(last ? { last } : {}),
    });
    for (const r of page.repositories) if (repositories.length < MAX_LISTED) repositories.push({ name: r.name, size: r.size, lastPush: r.lastPush });
    if (!page.next) break;
    last = page.next;
  }
  return { upstreams, repositories, bytesServed };
}

/** The mirror page: each upstream and its health, hits and misses; the cached repositories. */
export function mirrorPage(status: MirrorStatus): Html {
  return html`<h1>Mirror</h1>
<div class="table-wrap"><table>
<thead><tr><th scope="col">Upstream</th><th scope="col">Health</th><th scope="col" class="num">Hits</th><th scope="col" class="num">Misses</th><th scope="col" class="hide-narrow">Local prefix</th></tr></thead>
<tbody>${status.upstreams.map(
    (u) => html`<tr><td class="name"><strong>${u.name}</strong><div class="muted mono">${u.url}</div></td>
<td>${u.online ? html`<span class="tag">online</span>` : html`<span class="tag">offline</span>${u.lastError ? html`<div class="muted">${u.lastError}</div>` : ''}`}</td>
<td class="num">${u.hits}</td><td class="num">${u.misses}</td><td class="hide-narrow"><code>${u.prefix || '(default)'}</code></td></tr>`,
  )}</tbody>
</table></div>
${status.bytesServed !== null ? html`<p>Served from the cache since start: ${sizeCell(status.bytesServed)}</p>` : ''}
<h2>Cached repositories</h2>
${
  status.repositories.length === 0
    ? html`<p class="muted">Nothing cached yet.</p>`
    : html`<div class="table-wrap"><table>
<thead><tr><th scope="col">Repository</th><th scope="col" class="num">Size</th><th scope="col">Last change</th></tr></thead>
<tbody>${status.repositories.map((r) => html`<tr><td class="name"><a href="${repoUrl(r.name)}">${r.name}</a></td><td class="num">${sizeCell(r.size)}</td><td>${timeCell(r.lastPush)}</td></tr>`)}</tbody>
</table></div>`
}`;
}
