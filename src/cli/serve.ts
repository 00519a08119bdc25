import { resolve } from 'node:path';
import { loadConfig, parseListenAddress, type Config } from '../config/config.js';
import { metricsConfig, startMetricsServer, type MetricsServer } from '../http/metrics.js';
import { createLogger } from '../logging.js';
import { raiseMallocTrimThreshold } from '../runtime/malloc-tuning.js';
import { CONFIG_OPTION, configFile, type Command } from './command.js';

/** A short description of the storage, for the startup line. */
export function describeStorage(config: Config): string {
  if (config.storage.driver === 's3') {
    return `s3 bucket ${config.storage.s3?.bucket ?? '?'}`;
  }
  return `filesystem ${resolve(config.storage.filesystem.rootDirectory)}`;
}

/** A failure to start that one line explains (no stack trace); `berth` prints it and exits 1. */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StartupError';
  }
}

/** ` at <endpoint>` for S3 storage with an explicit endpoint, else empty. */
function storageEndpoint(config: Config): string {
  const endpoint = config.storage.driver === 's3' ? config.storage.s3?.endpoint : undefined;
  return endpoint ? ` at ${endpoint}` : '';
}

/** The innermost cause of an error, in words: `EACCES: permission denied, mkdir '/srv/x'`, `connect ECONNREFUSED ...`. */
export function describeCause(err: unknown): string {
  let e: unknown = err;
  const seen: string[] = [];
  while (e instanceof Error) {
    const errno = e as NodeJS.ErrnoException;
    // AggregateError (happy-eyeballs connects): its first error says it.
    const inner = e instanceof AggregateError && e.errors.length > 0 ? (e.errors[0] as unknown) : e.cause;
    seen.push(errno.code && !e.message.includes(errno.code) ? `${errno.code}: ${e.message}` : e.message || e.name);
    if (inner === undefined || inner === e) break;
    e = inner;
  }
  if (seen.length === 0) return String(err);
  const last = seen[seen.length - 1] as string;
  return last.length > 0 ? last : seen.join(': ');
}

/** `berth serve`: runs the registry. */
export const serveCommand: Command = {
  summary: 'run the registry (default: :5000, filesystem storage under ./data)',
  usage: 'berth serve [FILE | -c FILE]',
  details: `Configuration: a registry:2 style config.yml (see config.example.yaml); REGISTRY_<SECTION>_<KEY> environment
variables override it (e.g. REGISTRY_HTTP_ADDR=127.0.0.1:5055). Stops on SIGTERM/SIGINT after in-flight requests.`,
  options: CONFIG_OPTION,
  maxPositionals: 1,
  run: ({ values, positionals }) => serve(configFile(values.config, positionals[0])),
};

/** Runs the registry until SIGTERM/SIGINT, then drains in-flight requests and exits 0. */
export async function serve(file: string | undefined): Promise<number> {
  const config = await loadConfig(file);
  const logger = createLogger(config);
  for (const w of config.warnings) logger.warn(w);
  // The HTTP application (fastify and every service) is loaded only by this command: the others start faster.
  const { buildApp } = await import('../app.js');
  const app = await buildApp(config, { logger });
  const { host, port } = parseListenAddress(config.http.addr);
  const parts = app.berth;
  // Storage that cannot be reached or written at startup is a setup mistake: one line naming it, exit 1.
  try {
    await parts.driver.health();
  } catch (err) {
    await app.close();
    throw new StartupError(`storage ${describeStorage(config)}${storageEndpoint(config)}: ${describeCause(err)}`);
  }
  const summary = `storage: ${describeStorage(config)}, upload sessions: ${parts.sessions.name}, auth: ${parts.authorizer.name}`;
  // fastify logs one line per bound address (several for 0.0.0.0); berth logs exactly one: address, storage, auth.
  const level = logger.level;
  logger.level = 'warn';
  let address: string;
  try {
    address = await app.listen({ host, port });
  } catch (err) {
    await app.close();
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new StartupError(`cannot listen on ${config.http.addr}: the address is already in use`);
    if (code === 'EACCES') throw new StartupError(`cannot listen on ${config.http.addr}: permission denied`);
    if (code === 'EADDRNOTAVAIL') throw new StartupError(`cannot listen on ${config.http.addr}: no such local address`);
    throw err;
  } finally {
    logger.level = level;
  }
  const shown = host === '0.0.0.0' || host === '::' ? `http://${host === '::' ? '[::]' : host}:${new URL(address).port}` : address;
  logger.info(
    { address: shown, storage: describeStorage(config), sessions: parts.sessions.name, auth: parts.authorizer.name },
    `berth listening on ${shown} (${summary})`,
  );
  // The hashing thread the first push would start (a read-only registry takes no pushes).
  if (!config.storage.readOnly) parts.uploads.warmHashing();
  // glibc keeps the memory of freed blob chunks for the next reads (src/runtime/malloc-tuning.ts).
  raiseMallocTrimThreshold();
  const mc = metricsConfig(config);
  let metricsServer: MetricsServer | undefined;
  if (mc.enabled && mc.addr) {
    metricsServer = await startMetricsServer(parts.metrics, mc.addr, mc.path);
    logger.info({ addr: mc.addr, path: mc.path }, 'metrics served on their own address');
  }

  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'shutting down: draining in-flight requests');
      const timer = setTimeout(() => {
        logger.warn({ timeoutMs: config.berth.shutdownTimeoutMs }, 'shutdown timeout reached; closing remaining connections');
        app.server.closeAllConnections();
      }, config.berth.shutdownTimeoutMs);
      timer.unref();
      app.close().then(
        async () => {
          await metricsServer?.close();
          clearTimeout(timer);
          logger.info('stopped');
          resolve();
        },
        (err: unknown) => {
          logger.error({ err }, 'error while shutting down');
          resolve();
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}
