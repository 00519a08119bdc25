import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { buildApp, type AppDeps } from '../../src/app.js';
import { configFrom, type Config } from '../../src/config/config.js';
import type { RawSection } from '../../src/config/fields.js';

/** The part of a tap test the helpers need (keeps helpers independent of tap's types). */
export interface Teardownable {
  teardown(fn: () => unknown): void;
}

export interface RunningBerth {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** The filesystem storage root (a fresh temp dir unless the config named one). */
  root: string;
  app: FastifyInstance;
  config: Config;
  /** What the server logged (JSON lines), when the test did not pass its own logger. */
  logs: string[];
  close(): Promise<void>;
}

function merge(base: RawSection, over: RawSection): RawSection {
  const out: RawSection = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] =
      typeof v === 'object' && v !== null && !Array.isArray(v) && typeof b === 'object' && b !== null && !Array.isArray(b)
        ? merge(b as RawSection, v as RawSection)
        : v;
  }
  return out;
}

/**
 * Starts berth in-process on 127.0.0.1:<free port> with filesystem storage in a temp dir, deletes enabled and
 * logging at `warn` into `logs` (the expected errors of fault tests do not end up in the test output; set
 * BERTH_TEST_LOG=debug to see the log on stdout instead). Closed and cleaned up at teardown.
 */
export async function startBerth(t: Teardownable, raw: RawSection = {}, deps: AppDeps = {}): Promise<RunningBerth> {
  const tmp = await mkdtemp(join(tmpdir(), 'berth-test-'));
  const defaults: RawSection = {
    log: { level: process.env.BERTH_TEST_LOG ?? 'warn', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: tmp }, delete: { enabled: true }, maintenance: { uploadpurging: { enabled: false } } },
  };
  const merged = merge(defaults, raw);
  const storage = merged.storage as RawSection;
  if (storage.s3 !== undefined) delete storage.filesystem;
  const config = configFrom(merged);
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logs.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  const logger = deps.logger ?? pino({ level: config.log.level }, process.env.BERTH_TEST_LOG ? process.stdout : sink);
  const app = await buildApp(config, { ...deps, logger });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await app.close();
    await rm(tmp, { recursive: true, force: true });
  };
  t.teardown(close);
  return { url: `http://127.0.0.1:${port}`, root: config.storage.filesystem.rootDirectory, app, config, logs, close };
}
