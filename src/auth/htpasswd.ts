import { createHash, createHmac, randomBytes } from 'node:crypto';
import { chmod, readFile, rename, stat, writeFile } from 'node:fs/promises';
import bcrypt from 'bcryptjs';
import type { Logger } from 'pino';

/**
 * Apache htpasswd files with bcrypt entries (`name:$2y$...`), the only kind Distribution accepts.
 * The file is re-read whenever its inode, size or modification time changes, so `berth user add` takes effect
 * without a restart.
 */

const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;
/** bcrypt only looks at the first 72 bytes; longer passwords are refused rather than silently truncated. */
const MAX_PASSWORD_BYTES = 72;
/** A valid hash to compare against for unknown users, so response time does not reveal which names exist. */
let dummyHash: Promise<string> | undefined;
const dummy = (): Promise<string> => (dummyHash ??= bcrypt.hash(randomBytes(16).toString('hex'), 10));

/** Parses htpasswd text into name → bcrypt hash; lines that are not bcrypt entries are reported and skipped. */
export function parseHtpasswd(text: string, onSkip?: (line: number, reason: string) => void): Map<string, string> {
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon <= 0) {
      onSkip?.(i + 1, 'expected name:hash');
      return;
    }
    const name = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (!BCRYPT.test(hash)) {
      onSkip?.(i + 1, `entry for ${name} is not bcrypt (create it with htpasswd -B or berth user add)`);
      return;
    }
    users.set(name, hash);
  });
  return users;
}

/** The users of an htpasswd file, reloaded on change. */
export class HtpasswdStore {
  private users = new Map<string, string>();
  private stamp = '';
  /** HMACs of (name, password, hash) that verified, so Basic auth does not run bcrypt on every request. */
  private readonly verified = new Set<string>();
  private readonly secret = randomBytes(32);

  constructor(
    readonly path: string,
    private readonly logger?: Logger,
  ) {}

  /** Re-reads the file when it changed. A missing file is an empty user list (with a warning). */
  async refresh(): Promise<void> {
    let stamp: string;
    try {
      const s = await stat(this.path);
      stamp = `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      stamp = 'missing';
    }
    if (stamp === this.stamp) return;
    if (stamp === 'missing') {
      this.logger?.warn({ file: this.path }, 'htpasswd file not found: no user can log in');
      this.users = new Map();
    } else {
      const text = await readFile(this.path, 'utf8');
      this.users = parseHtpasswd(text, (line, reason) => this.logger?.warn({ file: this.path, line }, `htpasswd: ${reason}`));
      this.logger?.info({ file: this.path, users: this.users.size }, 'htpasswd loaded');
    }
    this.verified.clear();
    this.stamp = stamp;
  }

  /** The bcrypt hash of `name`, or undefined. */
  async hashOf(name: string): Promise<string | undefined> {
    await this.refresh();
    return this.users.get(name);
  }

  /** True when `password` is `name`'s password. Runs bcrypt even for unknown names. */
  async verify(name: string, password: string): Promise<boolean> {
    await this.refresh();
    const hash = this.users.get(name);
    const key = createHmac('sha256', this.secret)
      .update(`${name}\0${password}\0${hash ?? ''}`)
      .digest('base64');
    if (hash !== undefined && this.verified.has(key)) return true;
    const ok = await bcrypt.compare(password, hash ?? (await dummy()));
    if (!ok || hash === undefined) return false;
    if (this.verified.size >= 1000) this.verified.clear();
    this.verified.add(key);
    return true;
  }
}

/** A short fingerprint of a user's htpasswd entry; refresh tokens carry it so a password change revokes them. */
export function entryFingerprint(hash: string): string {
  return createHash('sha256').update(hash).digest('base64url').slice(0, 16);
}

function assertUserName(name: string): void {
  if (!/^[^\s:#][^\s:]*$/.test(name)) throw new Error(`invalid user name ${JSON.stringify(name)}: no spaces or ':'`);
  if (name === 'anonymous' || name === 'authenticated' || name.startsWith('group:')) {
    throw new Error(`user name ${JSON.stringify(name)} is reserved by the access rules`);
  }
}

async function readLines(file: string): Promise<{ lines: string[]; mode: number }> {
  try {
    const [text, s] = await Promise.all([readFile(file, 'utf8'), stat(file)]);
    return { lines: text.split(/\r?\n/).filter((l) => l !== ''), mode: s.mode & 0o777 };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { lines: [], mode: 0o600 };
    throw err;
  }
}

async function writeLines(file: string, lines: string[], mode: number): Promise<void> {
  const tmp = `${file}.tmp-${randomBytes(6).toString('hex')}`;
  await writeFile(tmp, lines.map((l) => `${l}\n`).join(''), { mode });
  await chmod(tmp, mode);
  await rename(tmp, file);
}

/**
 * Adds `name` to the htpasswd `file` with a bcrypt hash of `password`, replacing an existing entry.
 * A new file is created with mode 0600; the write is atomic (temporary file, then rename).
 */
export async function userAdd(file: string, name: string, password: string): Promise<void> {
  assertUserName(name);
  if (password === '') throw new Error('password must not be empty');
  if (Buffer.byteLength(password) > MAX_PASSWORD_BYTES) throw new Error(`password longer than ${MAX_PASSWORD_BYTES} bytes`);
  const hash = (await bcrypt.hash(password, 10)).replace(/^\$2b\$/, '$2y$');
  const { lines, mode } = await readLines(file);
  const entry = `${name}:${hash}`;
  const index = lines.findIndex((l) => l.startsWith(`${name}:`));
  if (index >= 0) lines[index] = entry;
  else lines.push(entry);
  await writeLines(file, lines, mode);
}

/** Removes `name` from the htpasswd `file`; resolves false when it was not there. */
export async function userRemove(file: string, name: string): Promise<boolean> {
  const { lines, mode } = await readLines(file);
  const kept = lines.filter((l) => !l.startsWith(`${name}:`));
  if (kept.length === lines.length) return false;
  await writeLines(file, kept, mode);
  return true;
}
