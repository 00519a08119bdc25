import { userInfo } from 'node:os';
import { pino } from 'pino';
import { userAdd, userRemove } from '../auth/htpasswd.js';
import { loadConfig } from '../config/config.js';
import { AuditLog } from '../events/audit.js';
import { parseAuditConfig } from '../events/config.js';
import { isSection } from '../config/fields.js';
import { commands } from './command-registry.js';

function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    return '';
  }
}

/**
 * What a `berth user` command works on: the htpasswd file (`--file F`, else the one the config `--config C` names)
 * and the audit trail (one line on stderr, and in the config's `berth.audit.file` when it names one).
 */
async function userTargets(args: string[]): Promise<{ file: string; audit: AuditLog }> {
  const flag = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const configFile = flag('--config') ?? flag('-c');
  const config = configFile ? await loadConfig(configFile) : undefined;
  let file = flag('--file') ?? flag('-f');
  if (!file && config) {
    const auth = config.auth ?? {};
    const builtin = isSection(auth.builtin) ? auth.builtin : {};
    const htpasswd = isSection(auth.htpasswd) ? auth.htpasswd : {};
    const path = builtin.users ?? htpasswd.path;
    if (typeof path !== 'string' || !path) throw new Error(`${configFile ?? ''} names no htpasswd file (auth.builtin.users or auth.htpasswd.path)`);
    file = path;
  }
  if (!file) throw new Error('name the htpasswd file with --file F (or --config config.yml)');
  const auditFile = config ? parseAuditConfig(config.berth.raw, () => undefined).file : undefined;
  return { file, audit: new AuditLog(pino({ base: {} }, process.stderr), auditFile ? { file: auditFile } : {}) };
}

/** Reads the password: the first line of stdin when piped, a prompt without echo on a terminal. */
async function readPassword(): Promise<string> {
  const stdin = process.stdin;
  if (stdin.isTTY) {
    process.stderr.write('Password: ');
    stdin.setRawMode(true);
    let pw = '';
    for await (const chunk of stdin as AsyncIterable<Buffer>) {
      const s = chunk.toString('utf8');
      if (s === '\u0003') throw new Error('interrupted');
      const end = s.search(/[\r\n]/);
      if (end >= 0) {
        pw += s.slice(0, end);
        break;
      }
      pw += s;
    }
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write('\n');
    return pw;
  }
  let text = '';
  for await (const chunk of stdin as AsyncIterable<Buffer>) text += chunk.toString('utf8');
  return text.split(/\r?\n/)[0] ?? '';
}

commands.set('user', {
  usage: 'berth user add|rm NAME (--file F | --config C)  manage htpasswd users (password from stdin)',
  async run(args) {
    const [action, name] = args;
    if ((action !== 'add' && action !== 'rm') || !name || name.startsWith('-')) {
      process.stderr.write('usage: berth user add|rm NAME (--file F | --config config.yml)\n');
      return 2;
    }
    try {
      const { file, audit } = await userTargets(args.slice(2));
      try {
        if (action === 'add') {
          await userAdd(file, name, await readPassword());
          audit.record('user add', { user: osUser(), origin: 'cli' }, { name, file });
          process.stderr.write(`user ${name} saved in ${file}\n`);
          return 0;
        }
        if (await userRemove(file, name)) {
          audit.record('user rm', { user: osUser(), origin: 'cli' }, { name, file });
          process.stderr.write(`user ${name} removed from ${file}\n`);
          return 0;
        }
      } finally {
        audit.close();
      }
      process.stderr.write(`berth: no user ${name} in ${file}\n`);
      return 1;
    } catch (err) {
      process.stderr.write(`berth: ${(err as Error).message}\n`);
      return 1;
    }
  },
});
