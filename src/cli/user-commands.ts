import { pino } from 'pino';
import { loadConfig, type Config } from '../config/config.js';
import { ConfigError, isSection } from '../config/fields.js';
import { AuditLog } from '../events/audit.js';
import { parseAuditConfig } from '../events/config.js';
import { CONFIG_OPTION, configFile, osUser, UsageError, type Command, type CommandArgs } from './command.js';

/**
 * What a `berth user` command works on: the htpasswd file (`--file F`, else the one the config names) and the audit
 * trail (one line on stderr, and in the config's `berth.audit.file` when it names one).
 */
async function userTargets(args: CommandArgs): Promise<{ file: string; audit: AuditLog }> {
  const configPath = configFile(args.values.config, undefined);
  let config: Config | undefined;
  if (configPath) {
    config = await loadConfig(configPath);
    for (const w of config.warnings) process.stderr.write(`berth: warning: ${w}\n`);
  }
  const auditFile = config ? parseAuditConfig(config.raw, () => undefined).file : undefined;
  const audit = new AuditLog(pino({ base: {} }, process.stderr), auditFile ? { file: auditFile } : {});
  return { file: await htpasswdFile(args, configPath, config), audit };
}

/** The htpasswd file a `berth user` command edits: `--file F`, else the one the config names. */
async function htpasswdFile(args: CommandArgs, configPath: string | undefined, config: Config | undefined): Promise<string> {
  const file = args.values.file;
  if (typeof file === 'string' && file) return file;
  if (configPath && config) {
    const auth = config.auth ?? {};
    const builtin = isSection(auth.builtin) ? auth.builtin : {};
    const htpasswd = isSection(auth.htpasswd) ? auth.htpasswd : {};
    const path = builtin.users ?? htpasswd.path;
    if (typeof path === 'string' && path) return path;
    throw new Error(`${configPath} names no htpasswd file (auth.builtin.users or auth.htpasswd.path)`);
  }
  throw new UsageError('name the htpasswd file with --file F (or a config with -c/--config, $BERTH_CONFIG)');
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

/** `berth user add|rm NAME`. */
export const userCommand: Command = {
  summary: 'add or remove an htpasswd user (bcrypt; password from stdin or a prompt)',
  usage: 'berth user add|rm NAME [--file F | -c FILE]',
  options: {
    file: { type: 'string', short: 'f', value: 'FILE', description: 'the htpasswd file (default: the one the config names)' },
    ...CONFIG_OPTION,
  },
  maxPositionals: 2,
  async run(args) {
    const [action, name] = args.positionals;
    if ((action !== 'add' && action !== 'rm') || !name) throw new UsageError('expected add or rm and a user name');
    try {
      const { file, audit } = await userTargets(args);
      // Loaded by this command only (bcrypt): the others, `serve` without htpasswd auth included, never need it.
      const { userAdd, userRemove } = await import('../auth/htpasswd.js');
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
      if (err instanceof UsageError || err instanceof ConfigError) throw err;
      process.stderr.write(`berth: ${(err as Error).message}\n`);
      return 1;
    }
  },
};
