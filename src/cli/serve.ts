import { buildApp } from '../app.js';
import { loadConfig, parseListenAddress, type Config } from '../config/config.js';
import { metricsConfig, startMetricsServer, type MetricsServer } from '../http/metrics.js';
import { createLogger } from '../logging.js';

/** The config file `serve` uses: the argument, else `BERTH_CONFIG`, else `REGISTRY_CONFIGURATION_PATH`. */
export function configPath(args: string[], env: NodeJS.ProcessEnv = process.env): string | undefined {
  const file = args.find((a) => !a.startsWith('-'));
  return file ?? (env.BERTH_CONFIG || env.REGISTRY_CONFIGURATION_PATH || undefined);
}

/** A short description of the storage, for the startup line. */
export function describeStorage(config: Config): string {
  if (config.storage.driver === 's3') {
    const bucket = config.storage.s3?.bucket;
    return `s3 bucket ${typeof bucket === 'string' ? bucket : '?'}`;
  }
  return `filesystem ${config.storage.filesystem.rootDirectory}`;
}

/** Runs the registry until SIGTERM/SIGINT, then drains in-flight requests and exits 0. */
export async function serve(args: string[]): Promise<number> {
  const env = { ...process.env };
  delete env.REGISTRY_CONFIGURATION_PATH;
  const config = await loadConfig(configPath(args), env);
  const logger = createLogger(config);
  for (const w of config.warnings) logger.warn(w);
  const app = await buildApp(config, { logger });
  const { host, port } = parseListenAddress(config.http.addr);
  const parts = app.berth;
  const summary = `storage: ${describeStorage(config)}, upload sessions: ${parts.sessions.name}, auth: ${parts.authorizer.name}`;
  // fastify logs one line per bound address (several for 0.0.0.0); berth logs exactly one: address, storage, auth.
  const level = logger.level;
  logger.level = 'warn';
  let address: string;
  try {
    address = await app.listen({ host, port });
  } finally {
    logger.level = level;
  }
  const shown = host === '0.0.0.0' || host === '::' ? `http://${host === '::' ? '[::]' : host}:${new URL(address).port}` : address;
  logger.info({ address: shown, storage: describeStorage(config), sessions: parts.sessions.name, auth: parts.authorizer.name }, `berth listening on ${shown} (${summary})`);
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
