import type { PullThrough, UpstreamState } from '../../proxy/index.js';
import type { Browser } from '../../services/catalog/browse.js';
import { sizeCell, timeCell } from './format.js';
import { html, type Html } from './html.js';
import { repoUrl } from './pages.js';

/** What the mirror page shows about the pull-through cache (`proxy`), read from `PullThrough.upstreams()`. */
export interface MirrorStatus {
  upstreams: {
    name: string;
    url: string;
    /** As `/readyz` says: `unknown` (not asked yet), `reachable`, `degraded` or `down`. */
    state: UpstreamState['state'];
    /** ISO time the current outage began (`down` only). */
    downSince?: string | undefined;
    /** The last failure, when down or degraded. */
    lastError?: string | null;
    /** Local name prefix of its cached repositories ('' for the default upstream). */
    prefix: string;
    /** Manifest and blob GETs answered from the cache, and those that needed the upstream, since start. */
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
  const all = proxy.upstreams();
  const upstreams = all.map((u) => ({
    name: u.name,
    url: u.url,
    state: u.state,
    downSince: u.downSince,
    lastError: u.state === 'down' || u.state === 'degraded' ? (u.lastError ?? null) : null,
    prefix: u.prefix,
    hits: u.counts.hits.manifest + u.counts.hits.blob,
    misses: u.counts.misses.manifest + u.counts.misses.blob,
  }));
  const bytesServed = all.reduce((sum, u) => sum + u.counts.servedBytes, 0);
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

const STATE_TEXT: Record<UpstreamState['state'], string> = { unknown: 'not asked yet', reachable: 'reachable', degraded: 'degraded', down: 'down' };

/** The mirror page: each upstream and its health, hits and misses; the cached repositories. */
export function mirrorPage(status: MirrorStatus): Html {
  return html`<h1>Mirror</h1>
<div class="table-wrap"><table>
<thead><tr><th scope="col">Upstream</th><th scope="col">Health</th><th scope="col" class="num">Hits</th><th scope="col" class="num">Misses</th><th scope="col" class="hide-narrow">Local prefix</th></tr></thead>
<tbody>${status.upstreams.map(
    (u) => html`<tr><td class="name"><strong>${u.name}</strong><div class="muted mono">${u.url}</div></td>
<td><span class="tag">${STATE_TEXT[u.state]}</span>${u.state === 'down' ? html` since ${timeCell(u.downSince)}` : ''}${u.lastError ? html`<div class="muted">${u.lastError}</div>` : ''}</td>
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
