import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify';

/**
 * Called for a request whose client closed the connection before its response finished: fastify runs no
 * `onResponse` hook for it, so whatever records finished requests (the metrics, the access log) records it here,
 * with status 499 (nginx's "client closed request").
 */
export type AbandonedListener = (request: FastifyRequest, reply: FastifyReply) => void;

/** The requests of an app whose clients went away first; see {@link abandonedRequests}. */
export interface AbandonedRequests {
  /** Calls `listener` once for each request still open when its connection closes, in the order listeners were added. */
  on(listener: AbandonedListener): void;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The app's tracker of abandoned requests, once {@link abandonedRequests} installed it. */
    berthAbandoned?: AbandonedRequests;
  }
}

/** The status recorded for a request whose client closed the connection before its response ended (nginx's 499). */
export const CLIENT_CLOSED_STATUS = 499;

/** The replies of a connection whose requests are not finished yet. */
const OPEN_REPLIES = Symbol('berth.openReplies');
/** Set on a reply reported as abandoned. */
const ABANDONED = Symbol('berth.abandoned');

/** A connection as the tracker keeps it. */
type TrackedSocket = Socket & { [OPEN_REPLIES]?: Set<FastifyReply> };

/**
 * Whether `reply` was reported to the listeners as abandoned. Should fastify still run its `onResponse` hooks later
 * (on the response's 'error', say), they can leave it out: it was recorded once already, as 499.
 */
export function wasAbandoned(reply: FastifyReply): boolean {
  return (reply as FastifyReply & { [ABANDONED]?: true })[ABANDONED] === true;
}

/**
 * The tracker of abandoned requests of `app`, installed on first use: an `onRequest` hook adds each reply to its
 * connection's set of open replies (giving the connection its one 'close' listener the first time), an `onResponse`
 * hook takes it out again, and the 'close' listener reports the replies left whose response is not finished. Call it
 * on the root instance or from a plugin that skips encapsulation (as {@link abandonedRequestsPlugin} does), so the
 * hooks see every route.
 */
export function abandonedRequests(app: FastifyInstance): AbandonedRequests {
  if (app.berthAbandoned) return app.berthAbandoned;
  const listeners: AbandonedListener[] = [];
  // A client that gives up on a request closes its connection, so one listener per connection (not one per request:
  // that is measurable on a manifest GET) finds the requests still open on it.
  function onConnectionClose(this: TrackedSocket): void {
    const open = this[OPEN_REPLIES];
    this[OPEN_REPLIES] = undefined;
    if (!open) return;
    for (const reply of open) {
      if (reply.raw.writableFinished) continue;
      (reply as FastifyReply & { [ABANDONED]?: true })[ABANDONED] = true;
      for (const listener of listeners) listener(reply.request, reply);
    }
  }
  const tracker: AbandonedRequests = { on: (listener) => void listeners.push(listener) };
  app.decorate('berthAbandoned', tracker);
  // The hooks take callbacks rather than returning promises: they run on every request, and a promise per hook per
  // request is measurable on a manifest GET.
  app.addHook('onRequest', (request, reply, done) => {
    const socket = request.raw.socket as TrackedSocket | null;
    if (socket) {
      let open = socket[OPEN_REPLIES];
      if (!open) {
        open = socket[OPEN_REPLIES] = new Set();
        socket.once('close', onConnectionClose);
      }
      open.add(reply);
    }
    done();
  });
  app.addHook('onResponse', (request, reply, done) => {
    (request.raw.socket as TrackedSocket | null)?.[OPEN_REPLIES]?.delete(reply);
    done();
  });
  return tracker;
}

/** {@link abandonedRequests} as a plugin applied to the whole app (like fastify-plugin: not encapsulated). */
export const abandonedRequestsPlugin: FastifyPluginCallback = Object.assign(
  (app: FastifyInstance, _options: unknown, done: (err?: Error) => void) => {
    abandonedRequests(app);
    done();
  },
  { [Symbol.for('skip-override')]: true, [Symbol.for('fastify.display-name')]: 'berth-abandoned-requests' },
);
