import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AccessRecord } from '../../auth/access.js';
import type { Authorizer, Principal } from '../../auth/authorizer.js';
import type { Config } from '../../config/config.js';
import { requestContext } from '../request-context.js';
import { toRegistryError } from '../error-handler.js';
import { statusOf } from '../error-status.js';
import { RegistryError, registryError } from '../../errors/registry-error.js';
import { assertName } from '../../oci/reference.js';
import type { Browser } from '../../services/catalog/browse.js';
import type { Html } from './html.js';
import type { PullThrough } from '../../proxy/index.js';
import { mirrorPage, mirrorStatus } from './mirror-page.js';
import {
  confirmPage,
  DEFAULT_PAGE,
  errorPage,
  imagePage,
  jobPage,
  layout,
  loginPage,
  notice,
  repoUrl,
  repositoriesPage,
  repositoryPage,
  usagePage,
  type Viewer,
} from './pages.js';
import { STYLESHEET } from './stylesheet.js';
import { UiSessions } from './ui-sessions.js';

/** Options of {@link uiRoutes}. */
export interface UiRoutesOptions {
  browser: Browser;
  /** For the request context a delete's events and audit lines carry. */
  config: Config;
  authorizer: Authorizer;
  /** Whether the registry has auth configured (a login form and per-user views). */
  authEnabled: boolean;
  /** Checks a password (auth/index.ts `login`); absent when berth has no users. */
  login?: (ip: string, name: string, password: string) => Promise<string>;
  /** `storage.delete.enabled` and not read-only: delete controls can work at all. */
  deleteEnabled: boolean;
  /** The server listens with TLS: cookies are `Secure`. */
  tls: boolean;
  /** The pull-through cache, when `proxy` is configured: the mirror page. */
  proxy?: PullThrough;
  sessions?: UiSessions;
}

/** The session cookie: an opaque id, scoped to `/ui`. */
export const COOKIE = 'berth_ui';

/**
 * Every UI answer's security headers: no inline script or style may run (labels and annotations are written by
 * whoever pushed), no framing, no sniffing, no referrer beyond the origin.
 */
export const UI_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'Content-Security-Policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'same-origin',
  'X-Frame-Options': 'DENY',
  'Cross-Origin-Opener-Policy': 'same-origin',
});

const BROWSER_SCRIPT = new URL('./browser/enhance.js', import.meta.url);

interface Job {
  name: string;
  state: 'pending' | 'done' | 'failed';
  error?: string;
  startedAt: string;
  /** The cookie id of who started it: nobody else sees the job. */
  owner: string;
}

interface Context {
  id: string;
  principal: Principal;
  viewer: Viewer;
  canPull: (repo: string) => Promise<boolean>;
  canDelete: (repo: string) => Promise<boolean>;
}

type Form = Record<string, string>;

function cookieOf(request: FastifyRequest): string | undefined {
  const header = request.headers.cookie;
  if (typeof header !== 'string') return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === COOKIE) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** The host the browser used, for `docker pull HOST/...` (escaped on output; odd values become `localhost`). */
function hostOf(request: FastifyRequest): string {
  const host = request.headers.host;
  return typeof host === 'string' && /^[A-Za-z0-9.\-:[\]]{1,255}$/.test(host) ? host : 'localhost';
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw registryError('NAME_INVALID', undefined, { message: 'malformed percent-encoding in path' });
  }
}

/**
 * The web UI under `/ui/` (and `/` → `/ui/`): server-rendered pages over the browse service (the same data and
 * access rules as `/api/v1/`), a small script for progressive enhancement and one stylesheet, both served here.
 *
 * A viewer sees exactly what the registry API would let them pull (`Authorizer.canPull`) and delete controls only
 * where `Authorizer.permits` grants `delete`. Every POST carries the CSRF token of the visitor's cookie.
 */
export async function uiRoutes(app: FastifyInstance, opts: UiRoutesOptions): Promise<void> {
  const { browser, authorizer } = opts;
  const sessions = opts.sessions ?? new UiSessions();
  const jobs = new Map<string, Job>();
  let script: Buffer | null = null;
  try {
    script = await readFile(BROWSER_SCRIPT);
  } catch {
    app.log.warn('web UI script not built (tsc -p tsconfig.browser.json): pages work without it');
  }

  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 16 * 1024 }, (_request, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(String(body))));
  });

  app.addHook('onSend', async (request, reply, payload) => {
    for (const [k, v] of Object.entries(UI_HEADERS)) reply.header(k, v);
    if (!request.url.startsWith('/ui/assets/')) reply.header('Cache-Control', 'no-store');
    return payload;
  });

  function setCookie(request: FastifyRequest, reply: FastifyReply, id: string, maxAgeS?: number): void {
    const secure = opts.tls || request.protocol === 'https';
    reply.header(
      'Set-Cookie',
      `${COOKIE}=${id}; Path=/ui; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}${maxAgeS !== undefined ? `; Max-Age=${maxAgeS}` : ''}`,
    );
  }

  async function contextOf(request: FastifyRequest, reply: FastifyReply): Promise<Context> {
    let id = cookieOf(request);
    if (!UiSessions.isId(id)) {
      id = UiSessions.newId();
      setCookie(request, reply, id);
    }
    const session = opts.authEnabled ? sessions.get(id) : undefined;
    const principal: Principal = session ? { account: session.account } : {};
    // The logged-in user made this request: the access log, and the events and audit lines of a delete, name them.
    if (session) request.principal = principal;
    const canUsage = await authorizer.permits(principal, [{ type: 'registry', name: 'catalog', actions: ['*'] }]);
    const viewer: Viewer = {
      authEnabled: opts.authEnabled,
      loginAvailable: opts.login !== undefined,
      csrf: sessions.csrfToken(id),
      canUsage,
      mirror: opts.proxy !== undefined,
    };
    if (session) viewer.account = session.account;
    const deleteRecord = (repo: string): AccessRecord[] => [{ type: 'repository', name: repo, actions: ['delete'] }];
    return {
      id,
      principal,
      viewer,
      canPull: (repo) => authorizer.canPull(principal, repo),
      canDelete: async (repo) => opts.deleteEnabled && (await authorizer.permits(principal, deleteRecord(repo))),
    };
  }

  /** Anonymous viewers of a registry whose rules give anonymous clients nothing go to the login form. */
  function mustLogIn(ctx: Context): boolean {
    return opts.authEnabled && ctx.viewer.account === undefined && !authorizer.anonymousListing;
  }

  function page(
    reply: FastifyReply,
    ctx: Context,
    title: string,
    content: Html,
    options: { status?: number; notice?: Html; refreshSeconds?: number } = {},
  ): FastifyReply {
    return reply
      .code(options.status ?? 200)
      .type('text/html; charset=utf-8')
      .send(layout(ctx.viewer, title, content, options).value);
  }

  function redirect(reply: FastifyReply, location: string): FastifyReply {
    return reply.code(303).header('Location', location).send();
  }

  /** A same-site path under /ui/ to return to after login, or /ui/. */
  function safeNext(next: unknown): string {
    return typeof next === 'string' && /^\/ui\/[^\\]*$/.test(next) && !next.includes('//') && !next.includes('/..') ? next : '/ui/';
  }

  app.setErrorHandler(async (err, request, reply) => {
    const e: RegistryError = toRegistryError(err, request);
    const status = statusOf(e);
    for (const [k, v] of Object.entries(e.headers)) if (k.toLowerCase() !== 'www-authenticate' && v !== '') reply.header(k, v);
    let ctx: Context;
    try {
      ctx = await contextOf(request, reply);
    } catch {
      return reply.code(status).type('text/plain; charset=utf-8').send(e.message);
    }
    const message = status >= 500 ? 'The registry could not answer this request; try again later.' : e.message;
    return page(reply, ctx, 'Error', errorPage(status, message), { status });
  });

  app.get('/', async (_request, reply) => redirect(reply, '/ui/'));
  app.get('/ui', async (_request, reply) => redirect(reply, '/ui/'));

  app.get('/ui/assets/ui.css', async (_request, reply) =>
    reply.type('text/css; charset=utf-8').header('Cache-Control', 'public, max-age=300').send(STYLESHEET),
  );
  app.get('/ui/assets/ui.js', async (_request, reply) => {
    if (!script) throw registryError('NOT_FOUND');
    return reply.type('text/javascript; charset=utf-8').header('Cache-Control', 'public, max-age=300').send(script);
  });

  // ---- login and logout -------------------------------------------------------------------------------------

  app.get('/ui/login', async (request, reply) => {
    const ctx = await contextOf(request, reply);
    if (!opts.authEnabled || ctx.viewer.account) return redirect(reply, '/ui/');
    const next = (request.query as Form).next;
    return page(
      reply,
      ctx,
      'Log in',
      loginPage({ csrf: ctx.viewer.csrf, available: opts.login !== undefined, ...(next ? { next: safeNext(next) } : {}) }),
    );
  });

  app.post('/ui/login', async (request, reply) => {
    const ctx = await contextOf(request, reply);
    const form = formOf(request);
    if (!sessions.checkCsrf(cookieOf(request), form.csrf)) return csrfRefused(reply, ctx);
    if (!opts.authEnabled || !opts.login) return redirect(reply, '/ui/');
    const name = (form.username ?? '').slice(0, 256);
    try {
      const account = await opts.login(request.ip, name, (form.password ?? '').slice(0, 1024));
      sessions.logout(cookieOf(request));
      const { id } = sessions.login(account);
      setCookie(request, reply, id, 12 * 3600);
      request.log.info({ account, ip: request.ip }, 'web UI login');
      return redirect(reply, safeNext(form.next));
    } catch (err) {
      if (!(err instanceof RegistryError)) throw err;
      const status = statusOf(err);
      if (status >= 500) throw err;
      for (const [k, v] of Object.entries(err.headers)) if (k.toLowerCase() === 'retry-after') reply.header(k, v);
      const text = status === 429 ? 'Too many failed logins from your address; wait a while and try again.' : 'Invalid user name or password.';
      return page(
        reply,
        ctx,
        'Log in',
        loginPage({ csrf: ctx.viewer.csrf, name, available: true, ...(form.next ? { next: safeNext(form.next) } : {}) }),
        {
          status,
          notice: notice('error', text),
        },
      );
    }
  });

  app.post('/ui/logout', async (request, reply) => {
    const ctx = await contextOf(request, reply);
    if (!sessions.checkCsrf(cookieOf(request), formOf(request).csrf)) return csrfRefused(reply, ctx);
    sessions.logout(cookieOf(request));
    setCookie(request, reply, UiSessions.newId());
    return redirect(reply, opts.authEnabled && !authorizer.anonymousListing ? '/ui/login' : '/ui/');
  });

  function formOf(request: FastifyRequest): Form {
    const body = request.body;
    if (typeof body !== 'object' || body === null) return {};
    const out: Form = {};
    for (const [k, v] of Object.entries(body)) if (typeof v === 'string') out[k] = v;
    return out;
  }

  function csrfRefused(reply: FastifyReply, ctx: Context): FastifyReply {
    return page(
      reply,
      ctx,
      'Refused',
      errorPage(403, 'This form expired or did not come from this site (CSRF check failed). Go back, reload the page and try again.'),
      { status: 403 },
    );
  }

  // ---- pages ---------------------------------------------------------------------------------------------------

  app.route({
    method: ['GET', 'POST'],
    url: '/ui/*',
    handler: async (request, reply) => {
      const rawPath = (request.raw.url ?? '/').split('?')[0] ?? '/';
      const ctx = await contextOf(request, reply);
      if (mustLogIn(ctx)) {
        if (request.method !== 'GET') return page(reply, ctx, 'Log in', errorPage(401, 'Log in first.'), { status: 401 });
        return redirect(reply, `/ui/login?next=${encodeURIComponent(request.url)}`);
      }
      const query = request.query as Form;
      if (rawPath === '/ui/' && request.method === 'GET') return repositories(reply, ctx, query);
      if (rawPath === '/ui/usage' && request.method === 'GET') {
        if (!ctx.viewer.canUsage) throw registryError('DENIED', undefined, { message: 'the storage page needs the registry:catalog:* right' });
        return page(reply, ctx, 'Storage', usagePage(await browser.usage()));
      }
      if (rawPath === '/ui/mirror' && request.method === 'GET' && opts.proxy) {
        if (!ctx.viewer.canUsage) throw registryError('DENIED', undefined, { message: 'the mirror page needs the registry:catalog:* right' });
        return page(reply, ctx, 'Mirror', mirrorPage(await mirrorStatus(opts.proxy, browser, ctx.canPull)));
      }
      const job = /^\/ui\/jobs\/([A-Za-z0-9_-]{1,64})$/.exec(rawPath);
      if (job && request.method === 'GET') {
        const j = jobs.get(job[1] as string);
        if (!j || j.owner !== ctx.id) throw registryError('NOT_FOUND', undefined, { message: 'no such job' });
        return page(reply, ctx, 'Delete repository', jobPage(j), j.state === 'pending' ? { refreshSeconds: 1 } : {});
      }
      const m = /^\/ui\/r\/(.+?)(?:\/-\/(image|delete)(?:\/([^/]+))?)?$/.exec(rawPath);
      if (!m) throw registryError('NOT_FOUND', undefined, { message: 'no such page' });
      const name = assertName(decodeSegment(m[1] as string));
      // Never reveal whether a repository the viewer may not pull exists.
      if (!(await ctx.canPull(name))) throw registryError('NAME_UNKNOWN', { name }, { message: 'repository name not known to registry' });
      const action = m[2];
      const param = m[3] === undefined ? undefined : decodeSegment(m[3]);
      if (action === undefined && param === undefined && request.method === 'GET') {
        const untagged = query.untagged === '1';
        const tags = await browser.listTags(name, { untagged });
        const deleted = query.deleted;
        return page(
          reply,
          ctx,
          name,
          repositoryPage({ name, host: hostOf(request), tags, untagged, canDelete: await ctx.canDelete(name), csrf: ctx.viewer.csrf }),
          deleted ? { notice: notice('ok', `Deleted ${deleted.slice(0, 300)}.`) } : {},
        );
      }
      if (action === 'image' && param !== undefined && request.method === 'GET') {
        const image = await browser.getImage(name, param);
        return page(
          reply,
          ctx,
          `${name} ${param}`,
          imagePage({ image, host: hostOf(request), canDelete: await ctx.canDelete(name), csrf: ctx.viewer.csrf }),
        );
      }
      if (action === 'delete' && param === undefined) return deletion(request, reply, ctx, name);
      throw registryError('NOT_FOUND', undefined, { message: 'no such page' });
    },
  });

  async function repositories(reply: FastifyReply, ctx: Context, query: Form): Promise<FastifyReply> {
    const q = (query.q ?? '').slice(0, 256);
    const n = query.n !== undefined && /^\d{1,4}$/.test(query.n) ? Math.min(1000, Math.max(1, Number(query.n))) : DEFAULT_PAGE;
    const last = query.last ? query.last.slice(0, 256) : null;
    const result = await browser.listRepositories({ n, canPull: ctx.canPull, ...(q ? { q } : {}), ...(last ? { last } : {}) });
    return page(reply, ctx, 'Repositories', repositoriesPage({ ...result, q, n, last }));
  }

  async function deletion(request: FastifyRequest, reply: FastifyReply, ctx: Context, name: string): Promise<FastifyReply> {
    if (!(await ctx.canDelete(name))) {
      throw registryError('DENIED', undefined, {
        message: opts.deleteEnabled ? 'you may not delete in this repository' : 'deletes are disabled on this registry (storage.delete.enabled)',
      });
    }
    const source = request.method === 'GET' ? (request.query as Form) : formOf(request);
    const what: { tag?: string; digest?: string; repository?: string } = {};
    if (source.tag) what.tag = source.tag.slice(0, 128);
    else if (source.digest) what.digest = source.digest.slice(0, 200);
    else if (source.repository === name) what.repository = name;
    else throw registryError('BAD_REQUEST', undefined, { message: 'say what to delete: tag, digest or repository' });
    if (request.method === 'GET') return page(reply, ctx, 'Delete?', confirmPage({ name, what, csrf: ctx.viewer.csrf }));
    if (!sessions.checkCsrf(cookieOf(request), source.csrf)) return csrfRefused(reply, ctx);
    request.log.info({ account: ctx.viewer.account, repository: name, ...what }, 'web UI delete');
    // Through the domain as the API's deletes: locks, the catalog index, events and audit lines with this request.
    const rctx = requestContext(request, opts.config);
    if (what.tag !== undefined) {
      await browser.deleteTag(name, what.tag, rctx);
      return redirect(reply, repoUrl(name, `?deleted=${encodeURIComponent(`tag ${what.tag}`)}`));
    }
    if (what.digest !== undefined) {
      await browser.deleteManifest(name, what.digest, rctx);
      return redirect(reply, repoUrl(name, `?untagged=1&deleted=${encodeURIComponent(`manifest ${what.digest}`)}`));
    }
    const id = randomBytes(16).toString('base64url');
    if (jobs.size >= 1000) for (const [k, j] of jobs) if (j.state !== 'pending' && jobs.size >= 1000) jobs.delete(k);
    const job: Job = { name, state: 'pending', startedAt: new Date().toISOString(), owner: ctx.id };
    jobs.set(id, job);
    browser.deleteRepository(name, rctx).then(
      () => {
        job.state = 'done';
      },
      (err: unknown) => {
        job.state = 'failed';
        job.error = err instanceof RegistryError ? err.message : 'internal error';
        if (!(err instanceof RegistryError)) request.log.error({ err, repository: name }, 'web UI repository delete failed');
      },
    );
    return redirect(reply, `/ui/jobs/${id}`);
  }
}
