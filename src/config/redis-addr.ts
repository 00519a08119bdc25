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

/** Where and as whom to connect: the `redis` section's address and credentials. */
export interface RedisTarget {
  addr: string;
  username?: string;
  password?: string;
  db: number;
}

/**
 * The client options every berth Redis client uses: short connect and command timeouts, one retry per command, the
 * offline queue on (requests right after start-up or during a brief reconnect succeed), reconnects backing off to
 * 1 s. `commandTimeoutMs` is 2 s unless a caller's commands are slower by nature (index rebuilds).
 */
export function redisClientOptions(target: RedisTarget, commandTimeoutMs = 2000) {
  const { host, port } = parseRedisAddr(target.addr);
  return {
    host,
    port,
    username: target.username,
    password: target.password,
    db: target.db,
    connectTimeout: 2000,
    commandTimeout: commandTimeoutMs,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    retryStrategy: (times: number) => Math.min(100 * times, 1000),
  };
}
