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
<thead><tr><th scope="col">Repository</th><th scope="col" class="num">Size</th><th scope="col">Last fetched</th></tr></thead>
<tbody>${status.repositories.map((r) => html`<tr><td class="name"><a href="${repoUrl(r.name)}">${r.name}</a></td><td class="num">${sizeCell(r.size)}</td><td>${timeCell(r.lastPush)}</td></tr>`)}</tbody>
</table></div>`
}`;
}
