import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';

/** One option of a command: `--name` (and `-x`), with or without a value. */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  /** For `--help`. */
  description: string;
  /** Placeholder of the value in `--help` (`FILE`, `DURATION`). */
  value?: string;
}

/** What a command receives: its parsed options and positionals. */
export interface CommandArgs {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/** A `berth` subcommand. main.ts lists them all in one table. */
export interface Command {
  /** One line for `berth --help`. */
  summary: string;
  /** The synopsis, e.g. `berth gc [FILE] [options]`. */
  usage: string;
  /** More text for `berth CMD --help` (after the options). */
  details?: string;
  /** Options beyond `--help` (every command has it). */
  options: Readonly<Record<string, OptionSpec>>;
  /** Most positional arguments accepted. */
  maxPositionals: number;
  run(args: CommandArgs): Promise<number>;
}

/** A command-line mistake: printed with a pointer to `--help`, exit status 2. */
export class UsageError extends Error {}

/** `-c/--config FILE`, shared by every command that reads a config. */
export const CONFIG_OPTION: Readonly<Record<string, OptionSpec>> = {
  config: { type: 'string', short: 'c', value: 'FILE', description: 'config file (else $BERTH_CONFIG, else $REGISTRY_CONFIGURATION_PATH)' },
};

const HELP_OPTION: OptionSpec = { type: 'boolean', short: 'h', description: 'show this help' };

/** The `--help` text of a command. */
export function commandHelp(name: string, command: Command): string {
  const rows = Object.entries({ ...command.options, help: HELP_OPTION }).map(([long, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : '    '}--${long}${o.value ? ` ${o.value}` : ''}`;
    return `  ${flag.padEnd(28)} ${o.description}`;
  });
  return `${command.summary}\n\nUsage: ${command.usage}\n\nOptions:\n${rows.join('\n')}\n${command.details ? `\n${command.details.trimEnd()}\n` : ''}`;
}

/**
 * Parses `argv` strictly (`node:util` parseArgs): an unknown option or a missing value is a {@link UsageError}.
 * Returns null when `--help` was given (the help was printed).
 */
export function parseCommandArgs(name: string, command: Command, argv: string[], out: NodeJS.WritableStream): CommandArgs | null {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [long, o] of Object.entries(command.options)) options[long] = o.short ? { type: o.type, short: o.short } : { type: o.type };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument[\s\S]*$/, '').split('\n')[0] ?? String(err));
  }
  if (parsed.values.help === true) {
    out.write(commandHelp(name, command));
    return null;
  }
  if (parsed.positionals.length > command.maxPositionals) {
    throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[command.maxPositionals])}`);
  }
  const values: CommandArgs['values'] = {};
  for (const [k, v] of Object.entries(parsed.values)) if (typeof v === 'string' || typeof v === 'boolean') values[k] = v;
  return { values, positionals: parsed.positionals };
}

/**
 * The config file a command uses, the same way for every command: `-c/--config FILE`, else the positional file
 * (serve, gc, du, fsck, config check), else `BERTH_CONFIG`, else registry:2's `REGISTRY_CONFIGURATION_PATH`; none
 * means the defaults (plus `REGISTRY_*` variables).
 */
export function configFile(flag: unknown, positional: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const fromFlag = typeof flag === 'string' && flag !== '' ? flag : undefined;
  if (fromFlag !== undefined && positional !== undefined) {
    throw new UsageError(`the config file is given twice (${JSON.stringify(positional)} and --config ${JSON.stringify(fromFlag)})`);
  }
  return fromFlag ?? positional ?? (env.BERTH_CONFIG || env.REGISTRY_CONFIGURATION_PATH || undefined);
}

/** The operating-system user running the command (the audit trail's and events' actor); empty when unknown. */
export function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    return '';
  }
}
