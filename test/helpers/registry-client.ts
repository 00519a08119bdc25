import { randomBytes } from 'node:crypto';
import { sha256 } from './digest.js';

/**
 * The tests' one Registry v2 client. Two levels:
 * - `request()` sends exactly what it is told (no redirects followed, whole small bodies read) and records what
 *   comes back, as the conformance suite's Go client does; `errorBody`, `jsonBody` and `relativeLocation` read
 *   its replies.
 * - the image methods push blobs, images, indexes and referrers the way real clients do (HEAD first,
 *   cross-repository mount, upload) and pull images back verifying every byte against its digest; they throw
 *   `HttpError` on an unexpected status.
 */

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';

/** One response as `request()` records it. */
export interface Reply {
  status: number;
  headers: Headers;
  body: Buffer;
}

/** Options of one `request()`. */
export interface RequestOptions {
  headers?: Record<string, string>;
  body?: Buffer | string;
  query?: Record<string, string>;
}

/** The error body the spec defines: `{"errors":[{"code":...,"message":...,"detail":...}]}`. */
export interface ErrorBody {
  errors: Array<{ code: string; message?: string; detail?: unknown }>;
}

/** An OCI descriptor as the image methods build and return them. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string };
  artifactType?: string;
}

/** An unexpected HTTP status met by one of the image methods. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    what: string,
  ) {
    super(`${what}: HTTP ${status} ${body.slice(0, 300)}`);
  }
}

/** A pushed image: its manifest descriptor and the blobs it uses. */
export interface PushedImage {
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
}

/** A client of one registry root URL, optionally with basic-auth credentials sent on every request. */
export class RegistryClient {
  constructor(
    readonly url: string,
    private readonly auth?: { username: string; password: string },
  ) {}

  /** Sends `method path` (path may carry a query; `options.query` is added to it); redirects are not followed. */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<Reply> {
    const url = new URL(path, this.url);
    for (const [k, v] of Object.entries(options.query ?? {})) url.searchParams.set(k, v);
    const headers: Record<string, string> = { 'User-Agent': 'berth-tests', ...(options.headers ?? {}) };
    const init: RequestInit = { method, headers, redirect: 'manual' };
    if (options.body !== undefined) init.body = typeof options.body === 'string' ? options.body : new Uint8Array(options.body);
    const res = await this.fetch(url, init);
    const body = Buffer.from(await res.arrayBuffer());
    return { status: res.status, headers: res.headers, body };
  }

  /** `fetch` with this client's credentials. */
  private fetch(url: string | URL, init: RequestInit = {}): Promise<Response> {
    if (!this.auth) return fetch(url, init);
    const headers = new Headers(init.headers);
    headers.set('Authorization', `Basic ${Buffer.from(`${this.auth.username}:${this.auth.password}`).toString('base64')}`);
    return fetch(url, { ...init, headers });
  }

  async hasBlob(repo: string, digest: string): Promise<boolean> {
    const res = await this.fetch(`${this.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
    return res.status === 200;
  }

  /** Uploads a blob (POST, then PUT with the body), unless the repository has it or it can be mounted from `from`. */
  async pushBlob(repo: string, bytes: Buffer, from?: string): Promise<Descriptor & { uploaded: boolean }> {
    const digest = sha256(bytes);
    const desc = { mediaType: OCI_LAYER, digest, size: bytes.length };
    if (await this.hasBlob(repo, digest)) return { ...desc, uploaded: false };
    const query = from ? `?mount=${digest}&from=${from}` : '';
    const start = await this.fetch(`${this.url}/v2/${repo}/blobs/uploads/${query}`, { method: 'POST' });
    if (start.status === 201) return { ...desc, uploaded: false };
    if (start.status !== 202) throw new HttpError(start.status, await start.text(), `start upload ${repo}`);
    const location = new URL(start.headers.get('location') ?? '', this.url);
    location.searchParams.set('digest', digest);
    const put = await this.fetch(location, {
      method: 'PUT',
      body: bytes,
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(bytes.length) },
    });
    if (put.status !== 201) throw new HttpError(put.status, await put.text(), `complete upload ${repo} ${digest}`);
    return { ...desc, uploaded: true };
  }

  async putManifest(repo: string, reference: string, body: unknown, mediaType: string): Promise<Descriptor> {
    const bytes = Buffer.from(JSON.stringify(body));
    const res = await this.fetch(`${this.url}/v2/${repo}/manifests/${reference}`, {
      method: 'PUT',
      body: bytes,
      headers: { 'Content-Type': mediaType },
    });
    if (res.status !== 201) throw new HttpError(res.status, await res.text(), `put manifest ${repo}:${reference}`);
    return { mediaType, digest: sha256(bytes), size: bytes.length };
  }

  /** Pushes an image made of `layers` (and a fresh config) and tags it (or pushes it by digest when `tag` is null). */
  async pushImage(
    repo: string,
    tag: string | null,
    layers: Buffer[],
    options: { from?: string; platform?: { os: string; architecture: string } } = {},
  ): Promise<PushedImage> {
    const layerDescs: Descriptor[] = [];
    for (const l of layers) {
      const d = await this.pushBlob(repo, l, options.from);
      layerDescs.push({ mediaType: OCI_LAYER, digest: d.digest, size: d.size });
    }
    const configBytes = Buffer.from(
      JSON.stringify({
        architecture: options.platform?.architecture ?? 'amd64',
        os: options.platform?.os ?? 'linux',
        nonce: randomBytes(8).toString('hex'),
      }),
    );
    const c = await this.pushBlob(repo, configBytes);
    const config = { mediaType: OCI_CONFIG, digest: c.digest, size: c.size };
    const body = { schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: layerDescs };
    const bytes = Buffer.from(JSON.stringify(body));
    const manifest = await this.putManifest(repo, tag ?? sha256(bytes), body, OCI_MANIFEST);
    return { manifest, config, layers: layerDescs };
  }

  /** Pushes an index of already pushed manifests. */
  async pushIndex(repo: string, tag: string, children: Descriptor[]): Promise<Descriptor> {
    return this.putManifest(repo, tag, { schemaVersion: 2, mediaType: OCI_INDEX, manifests: children }, OCI_INDEX);
  }

  /** Pushes an artifact manifest whose subject is `subject` (by digest, as referrer tooling does). */
  async pushReferrer(repo: string, subject: Descriptor, artifactType: string, payload: Buffer): Promise<PushedImage> {
    const empty = Buffer.from('{}');
    const c = await this.pushBlob(repo, empty);
    const l = await this.pushBlob(repo, payload);
    const config = { mediaType: 'application/vnd.oci.empty.v1+json', digest: c.digest, size: c.size };
    const layers = [{ mediaType: 'application/octet-stream', digest: l.digest, size: l.size }];
    const body = { schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType, config, layers, subject };
    const bytes = Buffer.from(JSON.stringify(body));
    const manifest = await this.putManifest(repo, sha256(bytes), body, OCI_MANIFEST);
    return { manifest, config, layers };
  }

  async deleteManifest(repo: string, reference: string): Promise<void> {
    const res = await this.fetch(`${this.url}/v2/${repo}/manifests/${reference}`, { method: 'DELETE' });
    if (res.status !== 202) throw new HttpError(res.status, await res.text(), `delete ${repo}:${reference}`);
  }

  /** GET of a manifest: status and, on 200, the body. */
  async getManifest(repo: string, reference: string): Promise<{ status: number; body?: Record<string, unknown>; digest?: string }> {
    const res = await this.fetch(`${this.url}/v2/${repo}/manifests/${reference}`, {
      headers: { Accept: [OCI_MANIFEST, OCI_INDEX].join(', ') },
    });
    if (res.status !== 200) {
      await res.arrayBuffer();
      return { status: res.status };
    }
    const bytes = Buffer.from(await res.arrayBuffer());
    return { status: 200, body: JSON.parse(bytes.toString('utf8')) as Record<string, unknown>, digest: sha256(bytes) };
  }

  /** GET of a blob: the digest of the bytes received, or the status when not 200. */
  async getBlobDigest(repo: string, digest: string): Promise<string | number> {
    const res = await this.fetch(`${this.url}/v2/${repo}/blobs/${digest}`);
    if (res.status !== 200) {
      await res.arrayBuffer();
      return res.status;
    }
    return sha256(Buffer.from(await res.arrayBuffer()));
  }

  /**
   * Pulls `reference` completely (index children, configs, layers), checking every digest. Returns the problems
   * found (empty when the image pulls completely).
   */
  async pull(repo: string, reference: string): Promise<string[]> {
    const problems: string[] = [];
    const m = await this.getManifest(repo, reference);
    if (m.status !== 200 || !m.body) return [`${repo}:${reference}: manifest HTTP ${m.status}`];
    if (reference.startsWith('sha256:') && m.digest !== reference) problems.push(`${repo}@${reference}: manifest digest mismatch`);
    const body = m.body as { manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
    if (Array.isArray(body.manifests)) {
      for (const child of body.manifests) problems.push(...(await this.pull(repo, child.digest)));
      return problems;
    }
    for (const b of [body.config, ...(body.layers ?? [])]) {
      if (!b) continue;
      const got = await this.getBlobDigest(repo, b.digest);
      if (got !== b.digest) problems.push(`${repo}:${reference}: blob ${b.digest} -> ${got}`);
    }
    return problems;
  }
}

/** `n` random bytes. */
export function randomLayer(n = 1024): Buffer {
  return randomBytes(n);
}

/**
 * The Location header as a path plus query relative to the registry root, whether the server sent an absolute URL
 * or a path (what the conformance suite's client calls the "relative location").
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
