import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One POST the receiver got. */
export interface ReceivedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A webhook receiver: a plain node HTTP server that records every request (registry:2 `notifications` target). */
export interface EventReceiver {
  /** `http://127.0.0.1:PORT/events` */
  url: string;
  port: number;
  requests: ReceivedRequest[];
  /** Every event of every envelope received with a 2xx answer, in arrival order. */
  events(): Record<string, unknown>[];
  /** Answer this status to every request from now on (e.g. 500 to play "down"); 200 by default. */
  setStatus(status: number): void;
  /** Resolves once `predicate(events())` holds; rejects after `timeoutMs` (default 20 s) with what arrived. */
  waitFor(predicate: (events: Record<string, unknown>[]) => boolean, timeoutMs?: number): Promise<Record<string, unknown>[]>;
  /** Stops listening (connections closed); `start` again on the same port with {@link startEventReceiver}'s `port`. */
  close(): Promise<void>;
}

/** The part of a tap test the helper needs. */
export interface Teardownable {
  teardown(fn: () => unknown): void;
}

/**
 * Starts a receiver on 127.0.0.1 (`port` 0: a free one). Requests answered with a non-2xx status are recorded in
 * `requests` but their events are not counted by `events()`.
 */
export async function startEventReceiver(t: Teardownable, port = 0): Promise<EventReceiver> {
  const requests: ReceivedRequest[] = [];
  const accepted: Record<string, unknown>[] = [];
  let status = 200;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      if (status >= 200 && status < 300) {
        try {
          const parsed = JSON.parse(body) as { events?: Record<string, unknown>[] };
          for (const e of parsed.events ?? []) accepted.push(e);
        } catch {
          // recorded in `requests` as is
        }
      }
      res.statusCode = status;
      res.end();
    });
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const actual = (server.address() as AddressInfo).port;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.teardown(close);
  return {
    url: `http://127.0.0.1:${actual}/events`,
    port: actual,
    requests,
    events: () => accepted,
    setStatus: (s) => {
      status = s;
    },
    waitFor: async (predicate, timeoutMs = 20_000) => {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(accepted)) {
        if (Date.now() > deadline) {
          throw new Error(`events did not arrive in ${timeoutMs} ms; got ${JSON.stringify(accepted, null, 1)}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      return accepted;
    },
    close,
  };
}
