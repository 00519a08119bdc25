#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { ConfigError } from '../config/fields.js';
import { commands } from './command-registry.js';
import { serve } from './serve.js';

const HELP = `berth: a Docker / OCI distribution registry

Usage:
  berth serve [config.yml]          run the registry (default: :5000, filesystem storage under ./data)
  berth --help | --version

Configuration: a registry:2 style config.yml (see config.example.yaml); REGISTRY_<SECTION>_<KEY> environment
variables override it (e.g. REGISTRY_HTTP_ADDR=127.0.0.1:5055). Without a file argument, BERTH_CONFIG or
REGISTRY_CONFIGURATION_PATH name the file.
`;

function version(): string {
  const pkg = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'package.json');
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    const extra = [...commands.values()].map((c) => `  ${c.usage}`).join('\n');
    process.stdout.write(extra ? HELP.replace('  berth --help', `${extra}\n  berth --help`) : HELP);
    return command === undefined ? 1 : 0;
  }
  if (command === '--version' || command === '-v' || command === 'version') {
    process.stdout.write(`berth ${version()}\n`);
    return 0;
  }
  if (command === 'serve') return serve(args);
  const extra = commands.get(command);
  if (extra) return extra.run(args);
  process.stderr.write(`berth: unknown command ${JSON.stringify(command)}; see berth --help\n`);
  return 2;
}

await import('./commands.js');
main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0 || process.argv[2] !== 'serve') process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) process.stderr.write(`berth: configuration error: ${err.message}\n`);
    else process.stderr.write(`berth: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
