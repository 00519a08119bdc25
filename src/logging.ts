import { Writable } from 'node:stream';
import { pino, stdTimeFunctions, type Logger } from 'pino';
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

/** The process logger, configured from `log.*` (never from NODE_ENV); times are ISO 8601 in UTC. */
export function createLogger(config: Config, destination: NodeJS.WritableStream = process.stdout): Logger {
  const options = {
    level: config.log.level,
    base: { ...config.log.fields },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: stdTimeFunctions.isoTime,
  };
  return logFormat(config, destination) === 'text' ? pino(options, new TextLines(destination)) : pino(options, destination);
}
