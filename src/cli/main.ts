#!/usr/bin/env node
// First: heap settings apply before the other modules load.
import '../runtime/apply-heap-tuning.js';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { ConfigError } from '../config/fields.js';
import { parseCommandArgs, UsageError, type Command } from './command.js';
import { indexCommand, repoCommand } from './catalog-commands.js';
import { configCommand } from './config-command.js';
import { mirrorCommand } from './mirror-command.js';
import { serveCommand, StartupError } from './serve.js';
import { duCommand, fsckCommand, gcCommand } from './storage-commands.js';
import { userCommand } from './user-commands.js';

/** Every command, in the order `berth --help` lists them. */
const COMMANDS: Readonly<Record<string, Command>> = {
  serve: serveCommand,
  gc: gcCommand,
  du: duCommand,
  fsck: fsckCommand,
  user: userCommand,
  repo: repoCommand,
  index: indexCommand,
  config: configCommand,
  mirror: mirrorCommand,
};

function help(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`);
  return `berth: a Docker / OCI distribution registry

Usage: berth COMMAND [options]    (berth COMMAND --help for its options)

Commands:
${rows.join('\n')}

Every command reads its config from -c/--config FILE (serve, gc, du, fsck and config check also take the file as
an argument), else $BERTH_CONFIG, else $REGISTRY_CONFIGURATION_PATH; REGISTRY_<SECTION>_<KEY> environment variables
override it. See config.example.yaml.

  berth --help | --version
`;
}

function version(): string {
  const pkg = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'package.json');
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}

/** Runs `berth ARGV...`; resolves with the exit status. */
async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help());
    return 0;
  }
  if (name === '--version' || name === '-v' || name === 'version') {
    process.stdout.write(`berth ${version()}\n`);
    return 0;
  }
  const command = name === undefined ? undefined : Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!command) {
    process.stderr.write(name === undefined ? help() : `berth: unknown command ${JSON.stringify(name)}; see berth --help\n`);
    return 2;
  }
  try {
    const parsed = parseCommandArgs(name as string, command, args, process.stdout);
    if (!parsed) return 0;
    return await command.run(parsed);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`berth ${name}: ${err.message}\nusage: ${command.usage}  (berth ${name} --help)\n`);
    return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) process.stderr.write(`berth: configuration error: ${err.message}\n`);
    else if (err instanceof StartupError) process.stderr.write(`berth: ${err.message}\n`);
    else process.stderr.write(`berth: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
