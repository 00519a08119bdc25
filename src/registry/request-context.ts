/**
 * Who asked, as the HTTP layer saw it: passed to `Namespace.repository` and from there down to the events the
 * domain emits (src/events). Work that no request started (garbage collection) passes `GC_CONTEXT`
 * (src/events/event.ts).
 */
export interface RequestContext {
  /** The request id (`X-Request-Id`, also in the access log). */
  id: string;
  /** The client's address as registry:2 reports it: `X-Forwarded-For`'s first entry, `X-Real-Ip`, else `ip:port`. */
  addr: string;
  /** The `Host` header. */
  host: string;
  method: string;
  useragent: string;
  /** The authenticated user, if any. */
  user?: string;
  /** `scheme://host` for `target.url`: `http.host` when configured, else from the request. Empty: no `url`. */
  baseUrl: string;
  /** What started the work when no client request did (`gc`); absent for requests. */
  origin?: string;
}
