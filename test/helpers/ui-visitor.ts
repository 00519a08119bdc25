/** One answer of the web UI. */
export interface Page {
  status: number;
  body: string;
  headers: Headers;
}

/** A small cookie-keeping client of the web UI (what a browser without script does). */
export class Visitor {
  cookie: string | undefined;
  constructor(readonly base: string) {}
  async get(path: string): Promise<Page> {
    return this.send(path, { method: 'GET' });
  }
  async post(path: string, form: Record<string, string>): Promise<Page> {
    return this.send(path, {
      method: 'POST',
      body: new URLSearchParams(form).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
  }
  private async send(path: string, init: { method: string; body?: string; headers?: Record<string, string> }): Promise<Page> {
    const headers: Record<string, string> = { ...(init.headers ?? {}) };
    if (this.cookie) headers.cookie = this.cookie;
    const res = await fetch(`${this.base}${path}`, { ...init, headers, redirect: 'manual' });
    const set = res.headers.get('set-cookie');
    if (set) this.cookie = set.split(';')[0];
    return { status: res.status, body: await res.text(), headers: res.headers };
  }
  /** The CSRF token of a page's first form. */
  static csrf(page: Page): string {
    const m = /name="csrf" value="([^"]+)"/.exec(page.body);
    if (!m) throw new Error('no csrf field on the page');
    return m[1] as string;
  }
}
