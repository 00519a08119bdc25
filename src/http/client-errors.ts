import type { Socket } from 'node:net';
import { registryError, type RegistryError } from '../errors/registry-error.js';
import { statusOf } from './error-status.js';

/**
 * Answers for requests Node's HTTP parser refuses before any route runs, as the distribution error JSON
 * (fastify's default writes its own `{"error":"Bad Request"}` body):
 * - raw bytes outside ASCII, or other characters HTTP does not allow, in the request target: 400 NAME_INVALID;
 * - headers too large: 431; a request not complete within the server's request timeout: 408;
 * - anything else (a malformed chunked body, a bad header line): 400 BAD_REQUEST.
 *
 * The connection is closed after the answer. A request whose body was being read when the parser failed is
 * destroyed by Node when the socket closes; its handler sees the body end with an error.
 */
export function clientErrorAnswer(err: { code?: string }): RegistryError {
  switch (err.code) {
    case 'HPE_INVALID_URL':
    case 'HPE_INVALID_PATH':
      return registryError('NAME_INVALID', undefined, { message: 'invalid characters in the request target' });
    case 'HPE_HEADER_OVERFLOW':
      return registryError('HEADERS_TOO_LARGE');
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return registryError('REQUEST_TIMEOUT');
    default:
      return registryError('BAD_REQUEST', err.code !== undefined ? { reason: err.code } : undefined);
  }
}

/**
 * fastify's `clientErrorHandler`: writes {@link clientErrorAnswer} on the socket (when still writable) and closes it
 * once the answer is written (writes leave at the end of the event loop's turn: see coalesced-writes.ts).
 */
export function clientErrorHandler(err: Error & { code?: string }, socket: Socket): void {
  // A reset connection has nobody to answer.
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const e = clientErrorAnswer(err);
  const body = JSON.stringify({ errors: [e.toJSON()] });
  socket.end(
    `HTTP/1.1 ${statusOf(e)} ${statusText(statusOf(e))}\r\n` +
      'Content-Type: application/json; charset=utf-8\r\n' +
      'Docker-Distribution-API-Version: registry/2.0\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      'Connection: close\r\n\r\n' +
      body,
    () => socket.destroy(),
  );
}

function statusText(status: number): string {
  return { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' }[status] ?? 'Error';
}

/**
 * The origin-form path of a request target: an absolute-form target (`GET http://host/v2/...`, RFC 9112 3.2.2,
 * which proxies send and servers "MUST accept") is routed like its path; any other target is returned as is.
 */
export function originForm(target: string): string {
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(target);
  if (!m) return target;
  const rest = target.slice(m[0].length);
  return rest.startsWith('/') ? rest : `/${rest}`;
}
