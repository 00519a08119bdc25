import { fastify, LogController, type FastifyInstance, type FastifyPluginAsync, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { AllowAllAuthorizer, type Authorizer } from './auth/authorizer.js';
import type { Config } from './config/config.js';
import { AuditLog, createEvents, parseAuditConfig, type RegistryEvents } from './events/index.js';
import { abandonedRequests, CLIENT_CLOSED_STATUS, wasAbandoned } from './http/abandoned-requests.js';
import { sendError } from './http/error-handler.js';
import { BackendUnavailableError, registryError } from './errors/registry-error.js';
import { clientErrorHandler, originForm } from './http/client-errors.js';
import { createMetrics, inertMetrics, metricsConfig, metricsPlugin, type Metrics } from './http/metrics.js';
import { registryRoutes } from './http/registry-routes.js';
import { parseGcSchedule, startGcSchedule, type GcSchedule } from './gc/schedule.js';
import {
  composeNamespace,
  createDriver,
  mirroredNamespace,
  createFillCoordinator,
  createRepositoryIndex,
  createSessionStore,
  withStorageTiming,
} from './compose.js';
import { accessLog, createLogger, lazyChildLogger } from './logging.js';
import { coalesceWrites } from './http/coalesced-writes.js';
import type { MirrorUpstreamStatus, PullThrough, UpstreamState } from './proxy/index.js';
import type { StorageDriver } from './storage/driver.js';
import { CachingDriver, withLinkCache } from './storage/link-cache.js';
import { RegistryStore } from './storage/registry-store.js';
import { WriteProbe } from './storage/write-probe.js';
import { staleUploadPolicy } from './uploads/stale-uploads.js';
import { purgeUploads } from './uploads/upload-purger.js';
import { readGcLastRun } from './gc/last-run.js';
import type { UploadSessionStore } from './uploads/session-store.js';
import { UploadService } from './uploads/upload-service.js';
import { createHttps } from './tls/https-listener.js';
import { apiRoutes } from './http/api-routes.js';
import type { WarmUpJobs } from './proxy/warm-up-jobs.js';
import type { Browser } from './services/catalog/browse.js';
import { CatalogIndex, parseIndexOptions } from './services/catalog/catalog-index.js';
import { RegistryBrowser } from './services/catalog/registry-browser.js';
import type { HashThreads } from './uploads/hash-threads.js';
import type { RepositoryIndex } from './services/catalog/repository-index.js';
import { RepositoryLocks } from './services/catalog/repository-locks.js';

/** Parts that can be passed in (tests, embedding); each defaults to what the config says. */
export interface AppDeps {
  logger?: Logger;
  driver?: StorageDriver;
  sessions?: UploadSessionStore;
  authorizer?: Authorizer;
  metrics?: Metrics;
  /** The events service (webhooks and the audit trail); default: what `notifications` and `berth.audit` say. */
  events?: RegistryEvents;
  /** The catalog index store (default: Redis when `redis` is configured, else in process). */
  repositoryIndex?: RepositoryIndex;
  /** How often the `http.tls` certificate and key files are checked for changes (default 5 s); tests check faster. */
  tlsPollIntervalMs?: number;
  /** Where uploads' running hashes are computed (default: the process's hashing threads). */
  hashThreads?: HashThreads;
}

/** What the app was built from, for the startup line and commands. */
export interface AppParts {
  config: Config;
  driver: StorageDriver;
  sessions: UploadSessionStore;
  authorizer: Authorizer;
  store: RegistryStore;
  uploads: UploadService;
  metrics: Metrics;
  events: RegistryEvents;
  /** The catalog index: `_catalog`, search and the JSON API's lists. */
  catalog: CatalogIndex;
  /** What the JSON API and the web UI show (src/services/catalog/browse.ts). */
  browser: Browser;
  /** Per-repository locks: pushes shared, a repository delete exclusive. */
  locks: RepositoryLocks;
}

declare module 'fastify' {
  interface FastifyInstance {
    berth: AppParts;
  }
}

/**
 * Builds the registry application without listening: plugins in order, the `/v2/` API, health endpoints and one
 * error handler. `main`/`serve` listens and handles signals; tests call `inject` or listen on port 0.
 */
export async function buildApp(config: Config, deps: AppDeps = {}): Promise<FastifyInstance> {
  const logger = deps.logger ?? createLogger(config);
  // TLS: certificate files reloaded when they change, or ACME (`http.tls.letsencrypt`).
  const https = await createHttps(config, logger, deps.tlsPollIntervalMs);
  const app = fastify({
    loggerInstance: logger,
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'reqId' }),
    // request.log is made when a request first logs something (most log only their access line).
    childLoggerFactory: lazyChildLogger,
    exposeHeadRoutes: false,
    return503OnClosing: true,
    // Socket inactivity, not request duration: a many-GB upload that keeps moving is never cut, a client that stalls
    // mid-body does not hold a file handle and its upload's write lease forever.
    connectionTimeout: config.berth.idleTimeoutMs,
    requestIdHeader: 'x-request-id',
    // Errors fastify raises before routing (a path with malformed percent-encoding) go through the same error
    // handler, so they too are the distribution error JSON rather than fastify's own body. No hook runs for them,
    // so the headers of every answer are set here.
    frameworkErrors: (err, request, reply) => void sendError(err, request, commonHeaders(request, reply)),
    // Requests the HTTP parser refuses (malformed chunked body, raw UTF-8 in the path) get the error JSON too.
    clientErrorHandler,
    rewriteUrl: (req) => originForm(req.url ?? '/'),
    ...(https ? { https: https.options } : {}),
  }) as unknown as FastifyInstance;
  https?.attach(app);
  // Answers written during a turn of the event loop leave together at its end (see coalesced-writes.ts).
  coalesceWrites(app.server, https ? 'secureConnection' : 'connection');

  const extraHeaders = Object.entries(config.http.headers);
  /**
   * The headers of every answer: the API version under `/v2`, the request id and `http.headers`; while shutting down,
   * `Connection: close`, so a request that was in flight when shutdown began does not leave its keep-alive connection
   * open behind it (the server would otherwise wait for the client to drop it before exiting).
   */
  function commonHeaders(request: FastifyRequest, reply: FastifyReply): FastifyReply {
    if (request.url.startsWith('/v2')) reply.header('Docker-Distribution-API-Version', 'registry/2.0');
    reply.header('X-Request-Id', request.id);
    for (const [k, v] of extraHeaders) reply.header(k, v.length === 1 ? v[0] : v);
    if (closing) reply.header('Connection', 'close');
    return reply;
  }

  const mc = metricsConfig(config);
  // prom-client is loaded only with metrics on; off, every instrument is inert.
  const metrics = deps.metrics ?? (mc.enabled ? await createMetrics() : inertMetrics());
  const baseDriver = deps.driver ?? (await createDriver(config, (m) => logger.warn(m)));
  // With metrics on, every driver call is timed into registry:2's registry_storage_action_seconds (below the link
  // cache: what it serves from memory is no storage action).
  const timedDriver = mc.enabled ? withStorageTiming(baseDriver, metrics.registry2.storageAction) : baseDriver;
  // Tags and repository links from memory, invalidated by every change (src/storage/link-cache.ts).
  const driver = await withLinkCache(timedDriver, config);
  const sessions = deps.sessions ?? (await createSessionStore(config));
  // The last gc run as recorded in storage, by this process, another replica or `berth gc` from the command line.
  metrics.gcLastRunSource = () => readGcLastRun(driver);
  const audit = new AuditLog(
    logger,
    parseAuditConfig(config.raw, (m) => logger.warn(m)),
  );
  const events = deps.events ?? (await createEvents(config, { driver, logger, metrics: metrics.events, audit }));
  let authorizer: Authorizer = deps.authorizer ?? new AllowAllAuthorizer();
  let authRoutes: FastifyPluginAsync | undefined;
  let authClose: (() => Promise<void>) | undefined;
  let uiLogin: ((ip: string, name: string, password: string) => Promise<string>) | undefined;
  if (!deps.authorizer && config.auth) {
    const { createAuth } = await import('./auth/index.js');
    const auth = await createAuth(config, { driver, logger, audit, storageRoot: config.storage.filesystem.rootDirectory });
    authorizer = auth.authorizer;
    if (auth.tokenServer) {
      // Loaded with the token server only (it and the routes load jose): a registry without auth never pays for it.
      const { tokenRoutes } = await import('./http/token-routes.js');
      authRoutes = tokenRoutes(auth.tokenServer.issuer, auth.tokenServer.signer);
    }
    authClose = () => auth.close();
    uiLogin = auth.login;
  }
  const store = new RegistryStore(driver);
  const uploads = new UploadService(driver, sessions, store, deps.hashThreads, (err, msg) => logger.warn({ err }, msg));
  let pullThrough: PullThrough | null = null;
  if (config.proxy) {
    const { createPullThrough } = await import('./proxy/index.js');
    // Cached repositories enter the catalog index as they are fetched (declared below; called only once serving).
    const coordinator = await createFillCoordinator(config);
    pullThrough = createPullThrough(config, {
      store,
      driver,
      logger,
      coordinator,
      onCached: (name) => {
        catalog.refresh(name).catch((err: unknown) => logger.warn({ err, repository: name }, 'catalog index: cannot record a cached repository'));
      },
    });
    if (!pullThrough) await coordinator.close();
  }
  if (pullThrough) {
    // The metrics read the cache's own counts at each scrape, as /readyz and the UI do.
    const proxy = pullThrough;
    metrics.mirrorSource = () => proxy.upstreams();
  }
  const repositoryIndex = deps.repositoryIndex ?? (await createRepositoryIndex(config));
  const catalog = new CatalogIndex(
    repositoryIndex,
    store,
    driver,
    logger.child({ component: 'catalog' }),
    parseIndexOptions(config.berth.raw, (m) => logger.warn(m)),
  );
  const locks = new RepositoryLocks();
  // The domain the routes call: mirror, events, catalog index and locks as decorators (compose.ts).
  const namespace = composeNamespace({ config, store, uploads, pullThrough, events, catalog, locks, logger });
  let lastGc: (() => { at: Date; bytesFreed: number } | undefined) | undefined;
  const browser = new RegistryBrowser({
    store,
    driver,
    catalog,
    namespace,
    deleteEnabled: config.storage.deleteEnabled,
    readOnly: config.storage.readOnly,
    lastGc: () => lastGc?.(),
    logger,
  });
  app.decorate('berth', { config, driver, sessions, authorizer, store, uploads, metrics, events, catalog, browser, locks });
  app.addHook('onReady', async () => events.start());

  let closing = false;
  app.setErrorHandler((err, request, reply) => {
    if (err instanceof BackendUnavailableError) {
      const operation = request.routeKind ?? 'other';
      if (err.backend === 'redis') metrics.redisErrors.inc({ operation });
      else metrics.storageErrors.inc({ driver: driver.name, operation });
    }
    return sendError(err, request, reply);
  });
  app.setNotFoundHandler((request, reply) => sendError(registryError('NOT_FOUND'), request, reply));

  // Hooks that run on every request take callbacks rather than returning promises (a promise per hook per request
  // is measurable on a manifest GET).
  app.addHook('onSend', (request, reply, payload, done) => {
    commonHeaders(request, reply);
    done(null, payload);
  });
  const access = config.log.accessLog ? accessLog(logger) : null;
  if (access) {
    const line = (request: FastifyRequest, reply: FastifyReply, status: number): void =>
      access({
        reqId: request.id,
        method: request.method,
        url: request.url,
        status,
        ms: Math.round(reply.elapsedTime * 10) / 10,
        route: request.routeKind,
        remote: request.ip,
        ua: request.headers['user-agent'],
        user: request.principal?.account,
      });
    // fastify runs no onResponse hook for a request whose client closed the connection first: the tracker reports it
    // when the connection closes, logged as 499 (nginx's "client closed request") with the time it had run. Should
    // fastify still end it later, it is not logged twice.
    abandonedRequests(app).on((request, reply) => line(request, reply, CLIENT_CLOSED_STATUS));
    app.addHook('onResponse', (request, reply, done) => {
      if (!wasAbandoned(reply)) line(request, reply, reply.statusCode);
      done();
    });
  }

  app.get('/healthz', async () => ({ status: 'ok' }));
  // Readiness is what a load balancer needs: storage serves pulls, so without it the replica is not ready. The
  // upload session store (Redis) only serves pushes: without it the replica stays ready for pulls, names the part
  // as degraded (body and `berth_degraded{part}`), and uploads answer 503 UNAVAILABLE until it is back.
  // The probe writes outside every repository: straight to storage, so a frozen Redis (the link cache's invalidation
  // channel) cannot make storage look unwritable.
  const writeProbe = new WriteProbe(baseDriver);
  app.get('/readyz', async (_request, reply) => {
    if (closing) return reply.code(503).send({ status: 'shutting down' });
    const checks: Record<string, string> = {};
    const degraded: string[] = [];
    let ok = true;
    const sessionsPart = sessions.name === 'redis' ? 'redis' : 'sessions';
    for (const [name, part, check] of [
      [
        'storage',
        'storage',
        async () => {
          await driver.health();
          // Disk full or a read-only mount (local filesystems). With storage.maintenance.readonly berth writes nothing,
          // so a read-only mount is fine.
          if (!config.storage.readOnly && driver.name === 'filesystem') await writeProbe.check();
        },
      ],
      ['sessions', sessionsPart, () => sessions.health()],
    ] as const) {
      try {
        await withTimeout(check(), 3000);
        checks[name] = 'ok';
        metrics.degraded.set({ part }, 0);
      } catch (err) {
        checks[name] = (err as Error).message || 'unavailable';
        // A storage write that failed only because Redis (the cache invalidation channel) is down is Redis's part.
        const redisDown = err instanceof BackendUnavailableError && err.backend === 'redis';
        metrics.degraded.set({ part }, redisDown && name === 'storage' ? 0 : 1);
        if (name === 'storage' && !redisDown) ok = false;
        else {
          const named = redisDown ? 'redis' : part;
          if (!degraded.includes(named)) degraded.push(named);
          if (named === 'redis') {
            metrics.degraded.set({ part: 'redis' }, 1);
            metrics.redisErrors.inc({ operation: 'health' });
          }
        }
      }
    }
    const status = !ok ? 'unavailable' : degraded.length > 0 ? 'degraded' : 'ok';
    // Upstreams are listed but never make the replica unready: cached content still serves while one is down.
    return reply
      .code(ok ? 200 : 503)
      .send(pullThrough ? { status, degraded, checks, upstreams: pullThrough.upstreams().map(upstreamState) } : { status, degraded, checks });
  });

  // With berth.metrics.addr the exposition is served on its own address by `serve`; the counting hooks stay here.
  // /metrics on the registry's address is behind the same authentication as /v2/ (any authenticated account; no
  // repository access needed). Scrapers without credentials use berth.metrics.addr, an internal address, instead.
  const metricsGuard =
    authorizer.name === 'none'
      ? undefined
      : async (request: FastifyRequest) => {
          await authorizer.authorize({ method: request.method, headers: request.headers, ip: request.ip, id: request.id }, []);
        };
  if (mc.enabled) await app.register(metricsPlugin(metrics, { serve: !mc.addr, path: mc.path, ...(metricsGuard ? { guard: metricsGuard } : {}) }));
  if (authRoutes) await app.register(authRoutes);
  await app.register(registryRoutes, { config, namespace, authorizer, metrics, catalog });
  // Warm-up jobs of the JSON API read through the cache itself (no pull events: no client pulled anything; the
  // catalog index learns of cached repositories through the cache's onCached).
  let warmUp: WarmUpJobs | undefined;
  if (pullThrough) {
    const { WARM_JOB_DEFAULTS, WarmUpJobs } = await import('./proxy/warm-up-jobs.js');
    warmUp = new WarmUpJobs(mirroredNamespace({ config, store, uploads, pullThrough }), {
      ...WARM_JOB_DEFAULTS,
      logger: logger.child({ component: 'warm-up' }),
    });
  }
  await app.register(apiRoutes, { browser, catalog, authorizer, config, ...(warmUp ? { warmUp } : {}) });
  if (config.ui.enabled) {
    const { uiRoutes } = await import('./http/ui/ui-routes.js');
    await app.register(uiRoutes, {
      browser,
      config,
      authorizer,
      authEnabled: authorizer.name !== 'none',
      deleteEnabled: config.storage.deleteEnabled && !config.storage.readOnly,
      tls: config.http.tls !== undefined,
      ...(uiLogin ? { login: uiLogin } : {}),
      ...(pullThrough ? { proxy: pullThrough } : {}),
    });
  }
  app.addHook('onReady', async () => catalog.start());
  if (pullThrough) {
    const proxy = pullThrough;
    app.addHook('onReady', async () => proxy.start());
  }

  // Online garbage collection on a schedule (`berth.gc`), when configured.
  const gcOptions = config.storage.readOnly ? null : parseGcSchedule(config.berth.raw, (m) => logger.warn(m));
  let gcSchedule: GcSchedule | undefined;
  // One stale-upload policy for scheduled gc and the purger: never before the session TTL (stale-uploads.ts).
  const uploadTtlMs = config.berth.uploadSessionTtlMs;
  if (gcOptions) {
    gcOptions.uploadAgeMs = staleUploadPolicy(uploadTtlMs, gcOptions.uploadAgeMs).ageMs;
    gcOptions.events = events;
    gcOptions.onResult = (r) => {
      metrics.gcBytesReclaimed.inc(r.bytesReclaimed);
      metrics.gcLastRun.set(Date.now() / 1000);
    };
    app.addHook('onReady', async () => {
      // gc decides from what storage holds this instant, never from the link cache.
      const schedule = startGcSchedule(driver instanceof CachingDriver ? driver.uncachedReads() : driver, gcOptions, logger, sessions);
      gcSchedule = schedule;
      lastGc = () => {
        const r = schedule.lastResult();
        return r ? { at: new Date(r.startedAt.getTime() + r.durationMs), bytesFreed: r.bytesReclaimed } : undefined;
      };
    });
  }

  let purgeTimer: NodeJS.Timeout | undefined;
  const purging = config.storage.uploadPurging;
  if (purging.enabled && !config.storage.readOnly) {
    const run = () => {
      purgeUploads(driver, sessions, { ageMs: staleUploadPolicy(uploadTtlMs, purging.ageMs).ageMs, dryRun: purging.dryRun, logger }).catch(
        (err: unknown) => logger.warn({ err }, 'upload purging failed'),
      );
    };
    app.addHook('onReady', async () => {
      purgeTimer = setInterval(run, purging.intervalMs);
      purgeTimer.unref();
    });
  }

  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onClose', async () => {
    if (purgeTimer) clearInterval(purgeTimer);
    // Completed uploads' folders still being removed (their answers did not wait) go before storage closes.
    await uploads.settle();
    gcSchedule?.stop();
    await catalog.stop();
    if (!deps.repositoryIndex) await repositoryIndex.close();
    // Warm-up jobs stop first; closing the cache aborts the fills they may be waiting on.
    warmUp?.cancel();
    await pullThrough?.close();
    await warmUp?.close();
    await authClose?.();
    await authorizer.close();
    if (!deps.events) await events.close();
    audit.close();
    if (!deps.sessions) await sessions.close();
    if (!deps.driver) await driver.close();
    else if (driver instanceof CachingDriver) await driver.cache.close();
  });
  return app;
}

/** An upstream as `/readyz` lists it: its state (the counts are the metrics'). */
function upstreamState(u: MirrorUpstreamStatus): UpstreamState {
  const { prefix, counts, ...state } = u;
  void prefix;
  void counts;
  return state;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
