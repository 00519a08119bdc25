import type { FastifyRequest } from 'fastify';
import type { Principal } from '../auth/authorizer.js';
import type { Config } from '../config/config.js';
import { clientAddr, type RequestContext } from '../events/event.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who made the request, once the authorizer let it through (the access log's `user`). */
    principal?: Principal;
  }
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * The request as the domain passes it to events and the audit trail: id, client address, host, method, user agent,
 * the authenticated user, and the base URL of `target.url` (`http.host` when configured; else, as registry:2 builds
 * it, the scheme from TLS or `X-Forwarded-Proto` and the host from `X-Forwarded-Host` or `Host`).
 */
export function requestContext(request: FastifyRequest, config: Config): RequestContext {
  const headers = request.headers;
  const host = first(headers.host) ?? '';
  let baseUrl = config.http.host;
  if (!baseUrl) {
    const proto = first(headers['x-forwarded-proto'])?.split(',')[0]?.trim() ?? (config.http.tls ? 'https' : 'http');
    const fwdHost = first(headers['x-forwarded-host'])?.split(',')[0]?.trim();
    const h = fwdHost || host;
    baseUrl = h ? `${proto}://${h}` : '';
  }
  const ctx: RequestContext = {
    id: request.id,
    addr: clientAddr(headers, request.socket.remoteAddress, request.socket.remotePort),
    host,
    method: request.method,
    useragent: first(headers['user-agent']) ?? '',
    baseUrl,
  };
  const user = request.principal?.account;
  if (user) ctx.user = user;
  return ctx;
}
