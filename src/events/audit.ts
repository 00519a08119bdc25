import { pino, type DestinationStream, type Logger } from 'pino';
import { REDACT_PATHS } from '../logging.js';

/** Who did it: the authenticated user, the client's address and the request id (empty for work no request started). */
export interface AuditActor {
  user?: string | undefined;
  addr?: string | undefined;
  requestId?: string | undefined;
  /** What started the change when no request did, e.g. `gc`. */
  origin?: string | undefined;
}

/**
 * The audit trail: one structured line per change (`logger: "audit"`, `msg: "audit"`, `action`, who, what) in the
 * process log and, with `berth.audit.file`, in a file of its own (the same JSON lines, appended synchronously so a
 * crash right after a change does not lose its line).
 *
 * Actions: `manifest push`, `blob mount`, `manifest delete`, `tag delete`, `blob delete`, `repository delete`,
 * `gc delete`, `user add`, `user rm`, `token grant`, `login failure`.
 */
export class AuditLog {
  private readonly log: Logger;
  private closed = false;
  private readonly fileLog: Logger | undefined;
  private readonly fileStream: (DestinationStream & { end?: () => void; flushSync?: () => void }) | undefined;

  constructor(logger: Logger, options: { file?: string } = {}) {
    this.log = logger.child({ logger: 'audit' });
    if (options.file) {
      this.fileStream = pino.destination({ dest: options.file, mkdir: true, sync: true, append: true });
      this.fileLog = pino({ base: { logger: 'audit' }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, this.fileStream);
    }
  }

  /** Writes one audit line. */
  record(action: string, actor: AuditActor, details: Record<string, unknown> = {}): void {
    const line: Record<string, unknown> = { action };
    if (actor.user) line.user = actor.user;
    if (actor.addr) line.addr = actor.addr;
    if (actor.requestId) line.reqId = actor.requestId;
    if (actor.origin) line.origin = actor.origin;
    Object.assign(line, details);
    this.log.info(line, 'audit');
    this.fileLog?.info(line, 'audit');
  }

  /** Closes the audit file, if any. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.fileStream?.end?.();
  }
}
