import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { Logger } from 'pino';
import type { UpstreamSettings } from './config.js';
import { NO_OBSERVER, rateLimitCount, type MirrorObserver } from './mirror-observer.js';

/** Why an upstream request produced no usable answer. */
export type UpstreamFailure = 'unreachable' | 'timeout' | 'status';

/**
 * The upstream could not answer: network error, timeout, 429 or 5xx (`status` then holds the HTTP status). Callers
 * serve cached content instead, or tell the client the upstream is unavailable.
 */
export class UpstreamError extends Error {
  constructor(
    readonly upstream: string,
    readonly failure: UpstreamFailure,
    message: string,
    readonly status?: number,
    readonly retryAfter?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'UpstreamError';
  }
}

/** A parsed `WWW-Authenticate` challenge. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` header's first challenge: `Bearer realm="...",service="...",scope="a:b:pull,push"`.
 * Quoted values may contain commas and escaped quotes.
 */
export function parseChallenge(header: string | null): Challenge | null {
  if (!header) return null;
  const m = /^\s*([A-Za-z][A-Za-z0-9._-]*)\s*(.*)$/s.exec(header);
  if (!m) return null;
  const params: Record<string, string> = {};
  const re = /\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)/gy;
  const rest = m[2] ?? '';
  for (let p = re.exec(rest); p; p = re.exec(rest)) {
    params[(p[1] as string).toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : (p[3] ?? '');
    if (re.lastIndex >= rest.length) break;
  }
  return { scheme: (m[1] as string).toLowerCase(), params };
}

/** How many consecutive failures make an upstream "offline", and how long it then stays skipped for revalidation. */
const FAILURES_OFFLINE = 1;
const OFFLINE_RETRY_MS = 10_000;
/** Redirects followed (Docker Hub sends blobs to a CDN). */
const MAX_REDIRECTS = 5;

/** At most a tenth of the window's pulls (and at least when one or none) left: warned about, shown as degraded. */
function fewPullsLeft(limit: number, remaining: number): boolean {
  return remaining <= Math.max(1, Math.floor(limit / 10));
}

/** How long after its last failure an upstream that answers again still counts as degraded. */
const DEGRADED_MS = 5 * 60_000;

/**
 * An upstream's state as `/readyz` and the UI show it: `unknown` (not asked yet), `reachable`, `degraded` (answering,
 * but it failed within the last 5 minutes or has few pulls left in its rate limit), `down` (its last request failed) since `downSince`.
 */
export interface UpstreamState {
  name: string;
  url: string;
  state: 'unknown' | 'reachable' | 'degraded' | 'down';
  /** ISO time of the first failure of the current outage (state `down` only). */
  downSince?: string;
  /** ISO time of the last failure, and its reason. */
  lastFailure?: string;
  lastError?: string;
  /** Docker Hub's rate-limit headers as last seen: pulls allowed per window and left. */
  rateLimit?: { limit: number; remaining: number };
}

/**
 * Health of one upstream: consecutive failures take it offline (logged once), the next success brings it back
 * (logged once). While offline and within the retry delay, cached tags are served without revalidating.
 */
export class UpstreamHealth {
  private failures = 0;
  private down = false;
  private retryAt = 0;
  private contacted = false;
  private downSince = 0;
  private lastFailureAt = 0;
  private lastError = '';
  /** The last rate-limit headers seen, if any. */
  rateLimit: { limit: number; remaining: number } | undefined;
  private reason: string | null = null;

  constructor(
    private readonly name: string,
    private readonly logger: Logger,
    private readonly onFailure: (reason: string) => void = () => undefined,
  ) {}

  /** True while the upstream is considered down and not due for another attempt. */
  get skipRevalidation(): boolean {
    return this.down && Date.now() < this.retryAt;
  }

  get online(): boolean {
    return !this.down;
  }

  /** A copy of the state for display (see {@link UpstreamState}). */
  snapshot(name: string, url: string, now = Date.now()): UpstreamState {
    const out: UpstreamState = { name, url, state: 'unknown' };
    if (this.down) {
      out.state = 'down';
      out.downSince = new Date(this.downSince).toISOString();
    } else if (this.contacted) {
      const limited = this.rateLimit !== undefined && fewPullsLeft(this.rateLimit.limit, this.rateLimit.remaining);
      out.state = limited || (this.lastFailureAt > 0 && now - this.lastFailureAt < DEGRADED_MS) ? 'degraded' : 'reachable';
    }
    if (this.lastFailureAt > 0) {
      out.lastFailure = new Date(this.lastFailureAt).toISOString();
      out.lastError = this.lastError;
    }
    if (this.rateLimit) out.rateLimit = { ...this.rateLimit };
    return out;
  }

  /** Why it went offline (the last failure while offline), null while online. */
  get lastFailure(): string | null {
    return this.down ? this.reason : null;
  }

  succeeded(): void {
    this.contacted = true;
    if (this.down) this.logger.info({ upstream: this.name }, 'upstream is reachable again');
    this.down = false;
    this.failures = 0;
  }

  failed(reason: string): void {
    this.contacted = true;
    this.lastFailureAt = Date.now();
    this.lastError = reason;
    if (!this.down) this.downSince = this.lastFailureAt;
    this.onFailure(reason);
    this.reason = reason;
    this.failures++;
    this.retryAt = Date.now() + OFFLINE_RETRY_MS;
    if (!this.down && this.failures >= FAILURES_OFFLINE) {
      this.down = true;
      this.logger.warn({ upstream: this.name, reason }, 'upstream unavailable: serving cached content');
    }
  }
}

interface CachedToken {
  value: string;
  expiresAt: number;
}

/** Options of one upstream request. */
export interface UpstreamRequest {
  method: 'GET' | 'HEAD';
  /** Upstream repository (for the token scope), and the path under `/v2/<repo>/`. */
  repository: string;
  path: string;
  accept?: string;
  /** Aborts the request (and its body). */
  signal?: AbortSignal;
  /**
   * The body is a large blob to stream: sent with node:http(s) rather than fetch, whose web streams cost about twice
   * the CPU per byte received (256 MiB from loopback: 600-970 ms against 390-500 with node:http, hashing included;
   * a cold pull through the mirror went from 159-204 to 205-221 MB/s, its peak RSS from 147-154 to 134 MiB).
   */
  blob?: boolean;
}

/** What an upstream answered: the parts of a fetch Response berth reads. */
export interface UpstreamAnswer {
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  /** The body (null for none); `cancel` drops what is left of it unread. */
  readonly body: (AsyncIterable<Uint8Array> & { cancel(): Promise<void> }) | null;
}

/** A fetch Response as an {@link UpstreamAnswer} (Node's ReadableStream is async-iterable and has `cancel`). */
function fetchAnswer(res: Response): UpstreamAnswer {
  return { status: res.status, headers: res.headers, body: res.body as unknown as UpstreamAnswer['body'] };
}

/** A node:http response as an {@link UpstreamAnswer}. */
function nodeAnswer(res: IncomingMessage): UpstreamAnswer {
  return {
    status: res.statusCode ?? 0,
    headers: {
      get: (name) => {
        const v = res.headers[name.toLowerCase()];
        return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
      },
    },
    body: Object.assign(res as AsyncIterable<Uint8Array>, {
      cancel: () => {
        res.destroy();
        return Promise.resolve();
      },
    }),
  };
}

/**
 * A client for one upstream registry. Authentication follows the Docker token spec: a request answered 401 with
 * `WWW-Authenticate: Bearer realm=...,service=...,scope=...` makes it GET the realm (with the configured credentials
 * as HTTP Basic, or anonymously) for a token, cached per scope until it expires, and retry; a `Basic` challenge is
 * answered with the configured credentials. Credentials a client sent to berth never reach this class, so they are
 * never forwarded. Requests time out after `timeout` waiting for response headers.
 */
export class UpstreamClient {
  readonly health: UpstreamHealth;
  private challenge: Challenge | null = null;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pendingTokens = new Map<string, Promise<string>>();
  private readonly basic: string | undefined;

  constructor(
    readonly settings: UpstreamSettings,
    private readonly logger: Logger,
    readonly observer: MirrorObserver = NO_OBSERVER,
  ) {
    this.health = new UpstreamHealth(settings.name, logger, () => observer.upstreamError(settings.name));
    if (settings.username !== undefined && settings.password !== undefined) {
      this.basic = `Basic ${Buffer.from(`${settings.username}:${settings.password}`).toString('base64')}`;
    }
  }

  get name(): string {
    return this.settings.name;
  }

  /**
   * Sends a request, doing the token dance when challenged. Resolves with any HTTP answer below 500 except 429
   * (the caller interprets 404, 401, ...); throws {@link UpstreamError} for network errors, timeouts, 429 and 5xx,
   * after recording them in {@link health}.
   */
  async request(req: UpstreamRequest): Promise<UpstreamAnswer> {
    const scope = `repository:${req.repository}:pull`;
    let auth = await this.authorization(scope, false);
    let res = await this.send(req, auth);
    if (res.status === 401) {
      const challenge = parseChallenge(res.headers.get('www-authenticate'));
      if (challenge && (challenge.scheme === 'bearer' || (challenge.scheme === 'basic' && this.basic))) {
        await res.body?.cancel().catch(() => undefined);
        this.challenge = challenge;
        auth = await this.authorization(challenge.params.scope ?? scope, true);
        res = await this.send(req, auth);
      }
    }
    this.noteRateLimit(res);
    if (res.status === 429 || res.status >= 500) {
      await res.body?.cancel().catch(() => undefined);
      const err = new UpstreamError(
        this.name,
        'status',
        `upstream ${this.name} answered ${res.status}`,
        res.status,
        res.headers.get('retry-after') ?? undefined,
      );
      this.health.failed(err.message);
      throw err;
    }
    this.health.succeeded();
    return res;
  }

  /**
   * Records Docker Hub's `ratelimit-limit` / `ratelimit-remaining` headers (`100;w=21600`) when an answer carries
   * them, and logs a warning once when at most a tenth of the pulls (and at least once when none) are left.
   */
  private noteRateLimit(res: UpstreamAnswer): void {
    const limit = rateLimitCount(res.headers.get('ratelimit-limit'));
    const remaining = rateLimitCount(res.headers.get('ratelimit-remaining'));
    if (limit === undefined || remaining === undefined) return;
    const before = this.health.rateLimit;
    this.health.rateLimit = { limit, remaining };
    const low = (n: number) => fewPullsLeft(limit, n);
    if (low(remaining) && (before === undefined || !low(before.remaining) || (remaining === 0 && before.remaining > 0))) {
      this.logger.warn({ upstream: this.name, limit, remaining }, 'upstream rate limit: few pulls left');
    }
  }

  /** One request (following redirects, dropping Authorization when leaving the upstream's origin). */
  private async send(req: UpstreamRequest, authorization: string | undefined): Promise<UpstreamAnswer> {
    let url = new URL(`${this.settings.url}/v2/${req.repository}/${req.path}`);
    const origin = url.origin;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'user-agent': 'berth-pull-through' };
      if (req.accept) headers.accept = req.accept;
      if (authorization && url.origin === origin) headers.authorization = authorization;
      const res = req.blob
        ? await this.nodeRequest(url, req.method, headers, req.signal)
        : fetchAnswer(await this.fetchWithTimeout(url, { method: req.method, headers, redirect: 'manual' }, req.signal));
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location && hop < MAX_REDIRECTS) {
        await res.body?.cancel().catch(() => undefined);
        url = new URL(location, url);
        continue;
      }
      return res;
    }
  }

  /**
   * One request with node:http(s), redirects not followed (see {@link send}); a timeout for the response headers, and
   * `signal` aborts the request and its body.
   */
  private nodeRequest(url: URL, method: string, headers: Record<string, string>, signal: AbortSignal | undefined): Promise<UpstreamAnswer> {
    return new Promise<UpstreamAnswer>((resolve, reject) => {
      let timedOut = false;
      const request = (url.protocol === 'https:' ? https : http).request(url, { method, headers, ...(signal ? { signal } : {}) }, (res) => {
        clearTimeout(timer);
        resolve(nodeAnswer(res));
      });
      const timer = setTimeout(() => {
        timedOut = true;
        request.destroy(new Error('timeout'));
      }, this.settings.timeoutMs);
      request.on('error', (err) => {
        clearTimeout(timer);
        reject(this.transportError(err, timedOut, signal));
      });
      request.end();
    });
  }

  /** The {@link UpstreamError} for a request that got no answer (recorded in {@link health} unless the caller aborted). */
  private transportError(err: unknown, timedOut: boolean, signal: AbortSignal | undefined): UpstreamError {
    const e = new UpstreamError(
      this.name,
      timedOut ? 'timeout' : 'unreachable',
      timedOut ? `upstream ${this.name} timed out after ${this.settings.timeoutMs} ms` : `upstream ${this.name} unreachable`,
      undefined,
      undefined,
      { cause: err },
    );
    if (!signal?.aborted) this.health.failed(e.message);
    return e;
  }

  /** fetch with a timeout for the response headers; the body stays tied to `signal` only. */
  private async fetchWithTimeout(url: URL, init: RequestInit, signal: AbortSignal | undefined): Promise<Response> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error('timeout')), this.settings.timeoutMs);
    const onAbort = () => controller.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    try {
      return await fetch(url, { ...init, signal: controller.signal });
    } catch (err) {
      throw this.transportError(err, controller.signal.aborted && !signal?.aborted, signal);
    } finally {
      // Only the headers timeout ends here: the body may still be streaming, and the caller's signal must still
      // abort it, so the (one-shot) listener stays.
      clearTimeout(timer);
    }
  }

  /** The Authorization header for `scope` per the last challenge; `renew` drops a cached token first. */
  private async authorization(scope: string, renew: boolean): Promise<string | undefined> {
    const challenge = this.challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === 'basic') return this.basic;
    if (challenge.scheme !== 'bearer' || !challenge.params.realm) return undefined;
    const key = `${challenge.params.realm}|${challenge.params.service ?? ''}|${scope}`;
    if (renew) this.tokens.delete(key);
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.value}`;
    let pending = this.pendingTokens.get(key);
    if (!pending) {
      pending = this.fetchToken(challenge.params.realm, challenge.params.service, scope, key).finally(() => this.pendingTokens.delete(key));
      this.pendingTokens.set(key, pending);
    }
    return `Bearer ${await pending}`;
  }

  private async fetchToken(realm: string, service: string | undefined, scope: string, key: string): Promise<string> {
    let url: URL;
    try {
      url = new URL(realm);
    } catch (err) {
      throw new UpstreamError(this.name, 'unreachable', `upstream ${this.name} sent an invalid token realm`, undefined, undefined, { cause: err });
    }
    if (service) url.searchParams.set('service', service);
    url.searchParams.set('scope', scope);
    const headers: Record<string, string> = { 'user-agent': 'berth-pull-through' };
    if (this.basic) headers.authorization = this.basic;
    const res = await this.fetchWithTimeout(url, { method: 'GET', headers, redirect: 'follow' }, undefined);
    if (res.status === 429 || res.status >= 500) {
      await res.body?.cancel().catch(() => undefined);
      const err = new UpstreamError(this.name, 'status', `token server of ${this.name} answered ${res.status}`, res.status);
      this.health.failed(err.message);
      throw err;
    }
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined);
      this.logger.warn({ upstream: this.name, status: res.status }, 'upstream token server refused the request (check proxy credentials)');
      // No token: the retried request fails with 401, which callers treat as "not available upstream".
      return '';
    }
    const body = (await res.json().catch(() => ({}))) as { token?: unknown; access_token?: unknown; expires_in?: unknown };
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : '';
    // Docker token spec: "expires_in ... defaults to 60 seconds"; renew a little early.
    const expiresIn = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60;
    if (token) this.tokens.set(key, { value: token, expiresAt: Date.now() + Math.max(expiresIn - 10, expiresIn / 2) * 1000 });
    return token;
  }
}
