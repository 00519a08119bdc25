/** Splits `host:port` (IPv6 in brackets). */
export function parseRedisAddr(addr: string): { host: string; port: number } {
  const colon = addr.lastIndexOf(':');
  const host = (colon < 0 ? addr : addr.slice(0, colon)).replace(/^\[(.*)\]$/, '$1');
  const portText = colon < 0 ? '6379' : addr.slice(colon + 1);
  const port = Number(portText);
  if (host === '' || !/^\d+$/.test(portText) || port < 1 || port > 65535) {
    throw new Error(`invalid redis address "${addr}": expected host:port`);
  }
  return { host, port };
}
