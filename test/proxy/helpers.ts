import { createServer, request as httpRequest, Agent, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { userAdd } from '../../src/auth/htpasswd.js';
import { startBerth, type RunningBerth } from '../helpers/berth.js';
import { startDockerRegistry, type DockerRegistry } from '../helpers/docker-registry.js';
import { makeImageLayout, type GeneratedLayout } from '../helpers/oci-layout.js';
import { tempDir } from '../helpers/ports.js';
import { dockerRef, skopeo } from '../helpers/skopeo.js';
import type { Test } from 'tap';
import { Writable } from 'node:stream';
import { pino } from 'pino';

/** One request in docker-registry's access log (Apache combined format on stdout). */
export interface AccessEntry {
  method: string;
  path: string;
  status: number;
}

/** Parses the access-log lines of a docker-registry's output. */
export function accessLog(registry: DockerRegistry): AccessEntry[] {
  const out: AccessEntry[] = [];
  for (const line of registry.logs) {
    const m = /"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP\/[\d.]+" (\d{3}) /.exec(line);
    if (m) out.push({ method: m[1] as string, path: m[2] as string, status: Number(m[3]) });
  }
  return out;
}

/** The access-log entries added since `mark` (a previous `accessLog(...).length`). */
export function accessSince(registry: DockerRegistry, mark: number): AccessEntry[] {
  return accessLog(registry).slice(mark);
}

/** A "Docker Hub" for the tests: docker-registry demanding tokens from a berth token server. */
export interface TokenHub {
  registry: DockerRegistry;
  /** The berth instance issuing the hub's tokens. */
  issuer: RunningBerth;
  /** The issuer's log lines (debug: one `token issued` line per token, with its account). */
  issuerLog: string[];
  root: string;
  /** Pushes an OCI layout's tag to the hub (with the seeding account). */
  seed(layoutDir: string, tag: string, repo: string, remoteTag?: string): Promise<void>;
}

export const HUB_SERVICE = 'test-hub';
/** Account allowed everything on the hub (seeding). */
export const SEED = { user: 'seeder', password: 'seeder-pw' };
/** Account the mirror may use for `private/**`. */
export const MIRROR = { user: 'mirror', password: 'mirror-pw' };

/**
 * Starts the hub: berth with its built-in token server (anonymous pull everywhere but `private/**`, which only
 * {@link MIRROR} may pull), and docker-registry with `auth.token` trusting berth's certificate.
 */
export async function startTokenHub(t: Test): Promise<TokenHub> {
  const dir = await tempDir(t, 'berth-proxy-hub-');
  const users = join(dir, 'htpasswd');
  await userAdd(users, SEED.user, SEED.password);
  await userAdd(users, MIRROR.user, MIRROR.password);
  const issuerLog: string[] = [];
  const logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        issuerLog.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    }),
  );
  const issuer = await startBerth(
    t,
    {
      auth: {
        builtin: {
          users,
          service: HUB_SERVICE,
          issuer: 'hub-issuer',
          rules: [
            { who: SEED.user, repository: '**', actions: ['*'] },
            { who: MIRROR.user, repository: 'private/**', actions: ['pull'] },
            { who: 'anonymous', repository: 'library/**', actions: ['pull'] },
            { who: 'anonymous', repository: 'org/**', actions: ['pull'] },
          ],
        },
      },
    },
    { logger },
  );
  const cert = await fetch(`${issuer.url}/auth/cert.pem`);
  const bundle = join(dir, 'issuer.pem');
  const { writeFile } = await import('node:fs/promises');
  await writeFile(bundle, await cert.text());
  const root = await tempDir(t, 'berth-proxy-hub-data-');
  const registry = await startDockerRegistry(t, {
    rootDirectory: root,
    extraConfig: { auth: { token: { realm: `${issuer.url}/auth/token`, service: HUB_SERVICE, issuer: 'hub-issuer', rootcertbundle: bundle } } },
  });
  return {
    registry,
    issuer,
    issuerLog,
    root,
    seed: async (layoutDir, tag, repo, remoteTag) => {
      await skopeo([
        'copy',
        '--all',
        '--preserve-digests',
        '--dest-tls-verify=false',
        '--dest-creds',
        `${SEED.user}:${SEED.password}`,
        `oci:${layoutDir}:${tag}`,
        dockerRef(registry.url, repo, remoteTag ?? tag),
      ]);
    },
  };
}

/**
 * A forwarding HTTP proxy that can hold a response: {@link GateProxy.hold} makes the next matching response stop
 * after `afterBytes` body bytes until {@link GateProxy.release}; {@link GateProxy.cut} ends it there with a reset.
 * Counts every request it forwards.
 */
export interface GateProxy {
  url: string;
  requests: Array<{ method: string; path: string; authorization?: string }>;
  /** Body bytes forwarded so far for held responses. */
  forwarded(): number;
  hold(match: (method: string, path: string) => boolean, afterBytes: number): void;
  cut(match: (method: string, path: string) => boolean, afterBytes: number): void;
  /** Answers the next `times` matching requests with `status` (and `Retry-After: 7`) without forwarding them. */
  fail(match: (method: string, path: string) => boolean, status: number, times: number): void;
  /** Flips one byte in the body of the next matching response (same length, wrong content). */
  corrupt(match: (method: string, path: string) => boolean): void;
  /** Never answers the next matching request (until release or teardown). */
  stall(match: (method: string, path: string) => boolean): void;
  /** Answers the next matching request with a 307 to `location` (as Docker Hub sends blobs to its CDN). */
  redirect(match: (method: string, path: string) => boolean, location: string): void;
  release(): void;
}

export async function startGateProxy(t: Test, target: string): Promise<GateProxy> {
  const upstream = new URL(target);
  const agent = new Agent({ keepAlive: true });
  const requests: GateProxy['requests'] = [];
  const sockets = new Set<Socket>();
  let rule: { match: (m: string, p: string) => boolean; afterBytes: number; mode: 'hold' | 'cut' } | undefined;
  let failing: { match: (m: string, p: string) => boolean; status: number; times: number } | undefined;
  let stalling: ((m: string, p: string) => boolean) | undefined;
  let corrupting: ((m: string, p: string) => boolean) | undefined;
  let redirecting: { match: (m: string, p: string) => boolean; location: string } | undefined;
  let releaseWaiters: Array<() => void> = [];
  let released = false;
  let forwardedBytes = 0;

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    requests.push({ method, path, ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    if (failing && failing.times > 0 && failing.match(method, path)) {
      failing.times--;
      req.resume();
      res.writeHead(failing.status, { 'content-type': 'application/json', 'retry-after': '7' });
      res.end(method === 'HEAD' ? undefined : '{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}');
      return;
    }
    if (redirecting && redirecting.match(method, path)) {
      const location = redirecting.location;
      redirecting = undefined;
      req.resume();
      res.writeHead(307, { location, 'content-length': '0' });
      res.end();
      return;
    }
    if (stalling && stalling(method, path)) {
      stalling = undefined;
      req.resume();
      releaseWaiters.push(() => res.destroy());
      return;
    }
    const corrupt = corrupting !== undefined && corrupting(method, path);
    if (corrupt) corrupting = undefined;
    const active = rule && rule.match(method, path) ? rule : undefined;
    if (active) rule = undefined;
    const up = httpRequest(
      { host: upstream.hostname, port: upstream.port, method, path: req.url, headers: { ...req.headers, host: upstream.host }, agent },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        if (corrupt) {
          let flipped = false;
          upRes.on('data', (chunk: Buffer) => {
            if (!flipped && chunk.length > 0) {
              flipped = true;
              chunk = Buffer.from(chunk);
              chunk[0] = (chunk[0] ?? 0) ^ 0xff;
            }
            res.write(chunk);
          });
          upRes.on('end', () => res.end());
          return;
        }
        if (!active) {
          upRes.pipe(res);
          return;
        }
        let sent = 0;
        let paused = false;
        upRes.on('data', (chunk: Buffer) => {
          if (paused) return;
          if (sent + chunk.length < active.afterBytes) {
            sent += chunk.length;
            forwardedBytes += chunk.length;
            res.write(chunk);
            return;
          }
          const head = chunk.subarray(0, active.afterBytes - sent);
          const tail = chunk.subarray(active.afterBytes - sent);
          res.write(head);
          sent += head.length;
          forwardedBytes += head.length;
          if (active.mode === 'cut') {
            upRes.destroy();
            setImmediate(() => req.socket.destroy());
            return;
          }
          paused = true;
          upRes.pause();
          const resume = () => {
            res.write(tail);
            forwardedBytes += tail.length;
            upRes.removeAllListeners('data');
            upRes.pipe(res);
            upRes.resume();
          };
          if (released) resume();
          else releaseWaiters.push(resume);
        });
        upRes.on('end', () => {
          if (!paused) res.end();
        });
      },
    );
    up.on('error', () => req.socket.destroy());
    req.pipe(up);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const w of releaseWaiters) w();
    for (const s of sockets) s.destroy();
    agent.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    forwarded: () => forwardedBytes,
    hold(match, afterBytes) {
      released = false;
      rule = { match, afterBytes, mode: 'hold' };
    },
    cut(match, afterBytes) {
      rule = { match, afterBytes, mode: 'cut' };
    },
    fail(match, status, times) {
      failing = { match, status, times };
    },
    stall(match) {
      stalling = match;
    },
    corrupt(match) {
      corrupting = match;
    },
    redirect(match, location) {
      redirecting = { match, location };
    },
    release() {
      released = true;
      const waiters = releaseWaiters;
      releaseWaiters = [];
      for (const w of waiters) w();
    },
  };
}

/** Polls `check` every 20 ms until it is true or `ms` passed (then false). */
export async function eventually(check: () => boolean | Promise<boolean>, ms = 20_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

/** What {@link seedWarmUpOrigin} pushed: a two-platform index and a single-platform image with two layers. */
export interface WarmUpOrigin {
  origin: DockerRegistry;
  multi: GeneratedLayout;
  single: GeneratedLayout;
  amd: GeneratedLayout['images'][number];
  arm: GeneratedLayout['images'][number];
  one: GeneratedLayout['images'][number];
}

/**
 * A docker-registry origin for the warm-up tests (CLI and JSON API): `library/multi:1`, an index of linux/amd64 and
 * linux/arm64 (one layer each), and `org/single:2` (two layers).
 */
export async function seedWarmUpOrigin(t: Test, prefix: string): Promise<WarmUpOrigin> {
  const origin = await startDockerRegistry(t, { rootDirectory: await tempDir(t, `${prefix}-origin-`) });
  const src = await tempDir(t, `${prefix}-src-`);
  const multi = await makeImageLayout(src, {
    layers: [40_000],
    tag: 'multi',
    platforms: [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
    ],
  });
  const single = await makeImageLayout(src, { layers: [20_000, 3000], tag: 'single' });
  await skopeo(['copy', '--all', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:multi`, dockerRef(origin.url, 'library/multi', '1')]);
  await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:single`, dockerRef(origin.url, 'org/single', '2')]);
  const amd = multi.images.find((i) => i.platform?.architecture === 'amd64');
  const arm = multi.images.find((i) => i.platform?.architecture === 'arm64');
  const one = single.images[0];
  if (!amd || !arm || !one) throw new Error('layouts not generated as expected');
  return { origin, multi, single, amd, arm, one };
}
