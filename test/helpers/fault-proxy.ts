/**
 * A fault-injecting HTTP proxy for tests: sits on a free loopback port in front of a real server (e.g. the strict S3
 * server) and forwards requests unchanged (Host header included, so SigV4 signatures stay valid) until
 * told to misbehave:
 * - {@link FaultProxy.failNext}: answer the next N matching requests with 500/503 and an S3 XML error;
 * - {@link FaultProxy.dropNext}: reset the connection of the next N matching requests before forwarding;
 * - {@link FaultProxy.dropMidRequest}: forward, then reset after N request-body bytes (mid-upload);
 * - {@link FaultProxy.dropMidResponse}: forward, then reset after N response-body bytes (mid-download);
 * - {@link FaultProxy.setDown}: reset every connection (the backend "stays down") until set up again.
 */
import { Agent, createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { TeardownHost } from './s3-server.js';

/** What a fault rule sees of a request. */
export interface ProxiedRequest {
  method: string;
  /** Raw path without the query. */
  path: string;
  query: URLSearchParams;
}

type Fault =
  | { kind: 'status'; status: number }
  | { kind: 'drop' }
  | { kind: 'drop-request'; afterBytes: number }
  | { kind: 'drop-response'; afterBytes: number };

interface Rule {
  fault: Fault;
  remaining: number;
  match: (r: ProxiedRequest) => boolean;
}

export interface FaultProxy {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  /** Every request seen, with the fault applied to it (if any). */
  requests: Array<{ method: string; path: string; query: Record<string, string>; fault?: string }>;
  failNext(times: number, status?: 500 | 503, match?: (r: ProxiedRequest) => boolean): void;
  dropNext(times: number, match?: (r: ProxiedRequest) => boolean): void;
  dropMidRequest(times: number, afterBytes: number, match?: (r: ProxiedRequest) => boolean): void;
  dropMidResponse(times: number, afterBytes: number, match?: (r: ProxiedRequest) => boolean): void;
  /** While down, every connection is reset as soon as it is accepted (and open ones are reset now). */
  setDown(down: boolean): void;
  /** Forgets unused rules. */
  clear(): void;
  stop(): Promise<void>;
}

/** Matchers for S3 operations (path-style requests). */
export const s3Op = {
  uploadPart: (r: ProxiedRequest) => r.method === 'PUT' && r.query.has('uploadId') && r.query.has('partNumber'),
  completeMultipart: (r: ProxiedRequest) => r.method === 'POST' && r.query.has('uploadId'),
  putObject: (r: ProxiedRequest) => r.method === 'PUT' && !r.query.has('uploadId'),
  getObject: (r: ProxiedRequest) => r.method === 'GET' && r.path.split('/').filter(Boolean).length > 1 && !r.query.has('uploadId'),
  any: () => true,
};

const ERRORS: Record<number, [string, string]> = {
  500: ['InternalError', 'We encountered an internal error. Please try again.'],
  503: ['SlowDown', 'Please reduce your request rate.'],
};

/** Starts the proxy in front of `target` (e.g. the S3 server's endpoint); it stops at teardown. */
export async function startFaultProxy(t: TeardownHost, target: string): Promise<FaultProxy> {
  const upstream = new URL(target);
  const agent = new Agent({ keepAlive: true });
  const rules: Rule[] = [];
  const sockets = new Set<Socket>();
  const requests: FaultProxy['requests'] = [];
  let down = false;

  const take = (r: ProxiedRequest): Fault | undefined => {
    const rule = rules.find((x) => x.remaining > 0 && x.match(r));
    if (!rule) return undefined;
    rule.remaining -= 1;
    return rule.fault;
  };

  const forward = (req: IncomingMessage, res: ServerResponse, fault: Fault | undefined): void => {
    const headers = { ...req.headers };
    // The proxy already answered `100 Continue`; `expect` is never part of a SigV4 signature.
    delete headers.expect;
    const up = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, agent }, (upRes) => {
      if (fault?.kind === 'drop-response' && fault.afterBytes === 0) {
        // The server did the work; the client never hears about it.
        upRes.resume();
        req.socket.destroy();
        return;
      }
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      if (fault?.kind !== 'drop-response') {
        upRes.pipe(res);
        return;
      }
      let sent = 0;
      upRes.on('data', (chunk: Buffer) => {
        if (sent + chunk.length >= fault.afterBytes) {
          res.write(chunk.subarray(0, Math.max(0, fault.afterBytes - sent)));
          upRes.destroy();
          // Let the partial bytes reach the client, then cut the connection.
          setImmediate(() => req.socket.destroy());
          return;
        }
        sent += chunk.length;
        res.write(chunk);
      });
      upRes.on('end', () => res.end());
    });
    up.on('error', () => req.socket.destroy());
    if (fault?.kind !== 'drop-request') {
      req.pipe(up);
      return;
    }
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received >= fault.afterBytes) {
        up.destroy();
        req.socket.destroy();
        return;
      }
      up.write(chunk);
    });
    req.on('end', () => up.end());
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const info: ProxiedRequest = { method: req.method ?? 'GET', path: url.pathname, query: url.searchParams };
    const fault = take(info);
    requests.push({
      method: info.method,
      path: decodeURIComponent(info.path),
      query: Object.fromEntries(url.searchParams),
      fault: fault?.kind === 'status' ? String(fault.status) : fault?.kind,
    });
    if (!fault || fault.kind === 'drop-request' || fault.kind === 'drop-response') {
      forward(req, res, fault);
      return;
    }
    if (fault.kind === 'drop') {
      req.socket.destroy();
      return;
    }
    const [code, message] = ERRORS[fault.status] ?? ['InternalError', 'error'];
    const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>FAULTPROXY</RequestId></Error>`;
    // Read the whole request first so the client sees the answer, not a reset.
    req.resume();
    req.on('end', () => {
      res.writeHead(fault.status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  });
  server.on('connection', (socket: Socket) => {
    if (down) {
      socket.resetAndDestroy();
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  const add = (fault: Fault, times: number, match?: (r: ProxiedRequest) => boolean): void => {
    rules.push({ fault, remaining: times, match: match ?? (() => true) });
  };
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    for (const s of sockets) s.destroy();
    agent.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.teardown(stop);
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    failNext: (times, status = 503, match) => add({ kind: 'status', status }, times, match),
    dropNext: (times, match) => add({ kind: 'drop' }, times, match),
    dropMidRequest: (times, afterBytes, match) => add({ kind: 'drop-request', afterBytes }, times, match),
    dropMidResponse: (times, afterBytes, match) => add({ kind: 'drop-response', afterBytes }, times, match),
    setDown(value: boolean) {
      down = value;
      // A connection already ending (its peer closed it, the shutdown is pending) is closed, not reset: Node 20's
      // resetAndDestroy on it leaves the shutdown request behind, and the process spins at exit waiting for it.
      if (value)
        for (const s of sockets)
          if (s.writableEnded) s.destroy();
          else s.resetAndDestroy();
    },
    clear() {
      rules.length = 0;
    },
    stop,
  };
}
