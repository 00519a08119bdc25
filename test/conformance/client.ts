/**
 * A tiny HTTP client for the conformance port: plain `fetch`, no redirects followed, whole (small) bodies read.
 * It plays the role the conformance suite's Go client plays: it sends what it is told and records what comes back.
 */

/** One response as the checks see it. */
export interface Reply {
  status: number;
  headers: Headers;
  body: Buffer;
}

/** Options of one request. */
export interface RequestOptions {
  headers?: Record<string, string>;
  body?: Buffer | string;
  query?: Record<string, string>;
}

/** The error body the spec defines: `{"errors":[{"code":...,"message":...,"detail":...}]}`. */
export interface ErrorBody {
  errors: Array<{ code: string; message?: string; detail?: unknown }>;
}

/** Sends requests to one registry root URL. */
export class RegistryClient {
  constructor(
    readonly rootURL: string,
    private readonly auth?: { username: string; password: string },
  ) {}

  /** Sends `method path` (path may carry a query; `options.query` is added to it). */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<Reply> {
    const url = new URL(path, this.rootURL);
    for (const [k, v] of Object.entries(options.query ?? {})) url.searchParams.set(k, v);
    const headers: Record<string, string> = { 'User-Agent': 'berth-conformance-port', ...(options.headers ?? {}) };
    if (this.auth) headers.Authorization = `Basic ${Buffer.from(`${this.auth.username}:${this.auth.password}`).toString('base64')}`;
    const init: RequestInit = { method, headers, redirect: 'manual' };
    if (options.body !== undefined) init.body = typeof options.body === 'string' ? options.body : new Uint8Array(options.body);
    const res = await fetch(url, init);
    const body = Buffer.from(await res.arrayBuffer());
    return { status: res.status, headers: res.headers, body };
  }
}

/**
 * The Location header as a path plus query relative to the registry root, whether the server sent an absolute URL
 * or a path (what the suite's client calls the "relative location").
 */
export function relativeLocation(reply: Reply, rootURL: string): string {
  const loc = reply.headers.get('location');
  if (!loc) return '';
  const u = new URL(loc, rootURL);
  return `${u.pathname}${u.search}`;
}

/** Parses a distribution error body, or returns null when the body is not one. */
export function errorBody(reply: Reply): ErrorBody | null {
  try {
    const parsed: unknown = JSON.parse(reply.body.toString('utf8'));
    if (typeof parsed !== 'object' || parsed === null || !('errors' in parsed)) return null;
    const errors = (parsed as { errors: unknown }).errors;
    if (!Array.isArray(errors)) return null;
    const out: ErrorBody = { errors: [] };
    for (const e of errors) {
      if (typeof e !== 'object' || e === null || typeof (e as { code?: unknown }).code !== 'string') return null;
      out.errors.push(e as ErrorBody['errors'][number]);
    }
    return out;
  } catch {
    return null;
  }
}

/** The body parsed as JSON, or undefined when it is not JSON. */
export function jsonBody(reply: Reply): unknown {
  try {
    return JSON.parse(reply.body.toString('utf8'));
  } catch {
    return undefined;
  }
}
