import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import type { Config } from './config/config.js';

/** Paths pino redacts: credentials never reach the logs. */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'authorization',
  'password',
  'token',
  'access_token',
  'refresh_token',
  '*.password',
  '*.token',
];

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** `log.formatter: text`: one human-readable line per record, `time LEVEL msg key=value ...`. */
class TextLines extends Writable {
  constructor(private readonly out: NodeJS.WritableStream) {
    super();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (!line) continue;
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        this.out.write(`${line}\n`);
        continue;
      }
      const { time, level, msg, pid: _pid, hostname: _host, ...rest } = rec;
      const fields = Object.entries(rest)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? (/\s/.test(v) ? JSON.stringify(v) : v) : JSON.stringify(v)}`)
        .join(' ');
      const ts = typeof time === 'number' ? new Date(time).toISOString() : String(time ?? '');
      this.out.write(`${ts} ${LEVEL_NAMES[Number(level)] ?? String(level)} ${String(msg ?? '')}${fields ? ` ${fields}` : ''}\n`);
    }
    done();
  }
}

/**
 * The format a logger writes: `log.formatter` when set, else text on a terminal (a person reads it) and JSON
 * otherwise (a log collector reads it).
 */
export function logFormat(config: Config, destination: NodeJS.WritableStream): 'json' | 'text' {
  if (config.log.formatter !== 'auto') return config.log.formatter;
  return 'isTTY' in destination && destination.isTTY === true ? 'text' : 'json';
}

let lastMs = -1;
let lastTime = '';
/**
 * pino's ISO 8601 `time` field, formatted once per millisecond: a busy server writes many lines in the same
 * millisecond, and formatting the date was a sixth of an access line's cost.
 */
function isoTime(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastTime = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastTime;
}

/**
 * Log lines for the process's standard output, written in batches: the lines of one turn of the event loop (every
 * request it answered) go out in one write at the end of that turn. One write per line cost a manifest GET a tenth
 * of its CPU; handing each batch to a thread for an asynchronous write cost more than writing it (~20 us against ~5
 * us per 4 KiB batch, measured here). Nothing waits for a buffer to fill, so a quiet server's lines appear at once;
 * a batch still pending when the process exits is written before it does. A process killed with SIGKILL can lose
 * the lines of its last turn.
 */
class StdoutLines {
  private pending = '';
  private scheduled = false;
  /** pino's synchronous destination: retries a full non-blocking pipe (EAGAIN) and partial writes. */
  private readonly out = pino.destination({ dest: 1, sync: true });

  constructor() {
    process.once('exit', () => this.send());
  }

  private readonly send = (): void => {
    this.scheduled = false;
    if (this.pending === '') return;
    const batch = this.pending;
    this.pending = '';
    this.out.write(batch);
  };

  write(line: string): void {
    this.pending += line;
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.send);
  }

  /** pino's `logger.flush()`. */
  flush(cb?: (err?: Error) => void): void {
    this.send();
    cb?.();
  }
}

let stdoutLines: StdoutLines | undefined;

/** The process logger, configured from `log.*` (never from NODE_ENV); times are ISO 8601 in UTC. */
export function createLogger(config: Config, destination: NodeJS.WritableStream = process.stdout): Logger {
  const options = {
    level: config.log.level,
    base: { ...config.log.fields },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: isoTime,
  };
  if (logFormat(config, destination) === 'text') return pino(options, new TextLines(destination));
  return pino(options, destination === process.stdout ? (stdoutLines ??= new StdoutLines()) : destination);
}

/** The fields of an access-log line, in the order they are written. */
export interface AccessRecord {
  reqId: string;
  method: string;
  url: string;
  status: number;
  ms: number;
  route: string | undefined;
  remote: string;
  ua: string | undefined;
  /** The authenticated user, also written as registry:2's `auth.user.name`. */
  user: string | undefined;
}

/** A JSON string value (`null` for a value that is not there, which {@link accessLog} leaves out). */
const str = (v: string): string => JSON.stringify(v);

/**
 * Writes access-log lines where `logger` writes, with its fields: exactly the JSON line pino writes for
 * `logger.info({reqId, method, ...}, 'request')` (the text formatter reads it as it reads pino's), built directly.
 * One line per request: pino's generic serialisation and redaction were most of the access log's cost (an access
 * line holds only the fields named here, none of them a credential). Null when `logger` does not write info lines.
 */
export function accessLog(logger: Logger): ((record: AccessRecord) => void) | null {
  if (!logger.isLevelEnabled('info')) return null;
  const stream = (logger as unknown as Record<symbol, pino.DestinationStream>)[pino.symbols.streamSym];
  let base = '';
  for (const [k, v] of Object.entries(logger.bindings())) if (v !== undefined) base += `,${str(k)}:${JSON.stringify(v)}`;
  return (r) => {
    let line = `{"level":30${isoTime()}${base},"reqId":${str(r.reqId)},"method":${str(r.method)},"url":${str(r.url)},"status":${r.status},"ms":${r.ms}`;
    if (r.route !== undefined) line += `,"route":${str(r.route)}`;
    line += `,"remote":${str(r.remote)}`;
    if (r.ua !== undefined) line += `,"ua":${str(r.ua)}`;
    if (r.user !== undefined) line += `,"user":${str(r.user)},"auth.user.name":${str(r.user)}`;
    stream.write(`${line},"msg":"request"}\n`);
  };
}

type LogArgs = [obj: unknown, msg?: string, ...args: unknown[]];

/** What a request logger needs of its parent (pino's Logger, or fastify's view of it). */
interface ChildCapable {
  level: string;
  fatal(...args: [unknown]): void;
  error(...args: [unknown]): void;
  warn(...args: [unknown]): void;
  info(...args: [unknown]): void;
  debug(...args: [unknown]): void;
  trace(...args: [unknown]): void;
  child(bindings: Record<string, unknown>, options?: object): ChildCapable;
}

/**
 * A request's logger (`request.log`) that makes pino's child logger only when something is logged: fastify makes
 * one per request, and most requests log nothing but their access line (written by {@link accessLog}).
 */
class LazyChildLogger {
  private real: ChildCapable | undefined;

  constructor(
    private readonly parent: ChildCapable,
    private readonly bindings: Record<string, unknown>,
    private readonly options: { level?: string },
  ) {}

  private get log(): ChildCapable {
    return (this.real ??= this.parent.child(this.bindings, this.options));
  }

  get level(): string {
    return this.real ? this.real.level : (this.options.level ?? this.parent.level);
  }

  set level(level: string) {
    this.log.level = level;
  }

  fatal(...args: LogArgs): void {
    this.log.fatal(...(args as [unknown]));
  }
  error(...args: LogArgs): void {
    this.log.error(...(args as [unknown]));
  }
  warn(...args: LogArgs): void {
    this.log.warn(...(args as [unknown]));
  }
  info(...args: LogArgs): void {
    this.log.info(...(args as [unknown]));
  }
  debug(...args: LogArgs): void {
    this.log.debug(...(args as [unknown]));
  }
  trace(...args: LogArgs): void {
    this.log.trace(...(args as [unknown]));
  }
  silent(): void {}

  child(bindings: Record<string, unknown>, options?: object): ChildCapable {
    return this.log.child(bindings, options);
  }
}

/** fastify's `childLoggerFactory`: a {@link LazyChildLogger} per request. */
export function lazyChildLogger<L extends ChildCapable>(parent: L, bindings: Record<string, unknown>, options: { level?: string }): L {
  return new LazyChildLogger(parent, bindings, options) as unknown as L;
}
