import { stringify } from 'yaml';
import { parseAuthSettings } from '../auth/settings.js';
import { loadConfig, type Config } from '../config/config.js';
import { isSection } from '../config/fields.js';
import { metricsConfig } from '../http/metrics.js';
import { parseGcSchedule } from '../gc/schedule.js';
import { parseProxySettings } from '../proxy/config.js';
import { CONFIG_OPTION, configFile, UsageError, type Command } from './command.js';

/** Keys whose values are secrets wherever they appear (compared in lower case). */
const SECRET_KEYS = new Set([
  'password',
  'secret',
  'secretkey',
  'secretaccesskey',
  'accesskey',
  'accesskeyid',
  'sessiontoken',
  'authorization',
  'proxy-authorization',
  'cookie',
  'x-api-key',
  'token',
]);

/** A copy of `value` with every secret (by key name, at any depth) replaced by `<redacted>`. */
export function redactSecrets(value: unknown, key = ''): unknown {
  if (Array.isArray(value)) return SECRET_KEYS.has(key.toLowerCase()) ? value.map(() => '<redacted>') : value.map((v) => redactSecrets(v, key));
  if (isSection(value)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = redactSecrets(v, k);
    return out;
  }
  if (SECRET_KEYS.has(key.toLowerCase()) && value !== undefined && value !== null && value !== '') return '<redacted>';
  return value;
}

/**
 * The effective configuration: the typed settings berth runs with (defaults filled in, S3 parsed, durations in
 * milliseconds) and, as written, the sections other modules read themselves.
 */
export function effectiveConfig(config: Config): Record<string, unknown> {
  const { raw, warnings: _w, berth, ...typed } = config;
  const { raw: berthRaw, ...berthTyped } = berth;
  const others: Record<string, unknown> = {};
  for (const k of ['notifications', 'ui', 'audit', 'index']) if (raw[k] !== undefined && raw[k] !== null) others[k] = raw[k];
  const storage = typed.storage.driver === 'filesystem' ? typed.storage : (({ filesystem: _f, ...rest }) => rest)(typed.storage);
  return redactSecrets({ ...typed, storage, berth: { ...berthTyped, ...berthRaw }, ...others }) as Record<string, unknown>;
}

/** `berth config check [FILE]`. */
export const configCommand: Command = {
  summary: 'validate a config file and print the effective configuration (secrets redacted)',
  usage: 'berth config check [FILE | -c FILE]',
  details: `Loads the file and the REGISTRY_* environment as berth serve would, and runs every section's checks (auth,
proxy, storage, metrics, gc) without starting anything. Warnings go to stderr. Exit status: 0 valid, 1 invalid,
2 usage error.`,
  options: {
    ...CONFIG_OPTION,
    quiet: { type: 'boolean', short: 'q', description: 'print nothing on success (warnings still go to stderr)' },
  },
  maxPositionals: 2,
  async run({ values, positionals }) {
    const [action, file] = positionals;
    if (action !== 'check')
      throw new UsageError(action === undefined ? 'expected a subcommand: check' : `unknown subcommand ${JSON.stringify(action)}; expected check`);
    const path = configFile(values.config, file);
    const config = await loadConfig(path);
    const warn = (m: string) => {
      if (!config.warnings.includes(m)) config.warnings.push(m);
    };
    if (config.auth) parseAuthSettings(config.auth, warn);
    if (config.proxy) parseProxySettings(config.proxy, warn);
    metricsConfig(config);
    parseGcSchedule(config.berth.raw, warn);
    for (const w of config.warnings) process.stderr.write(`warning: ${w}\n`);
    if (values.quiet !== true) {
      process.stdout.write(
        `# ${path ?? 'no config file: defaults'}${Object.keys(process.env).some((k) => k.startsWith('REGISTRY_')) ? ' with REGISTRY_* overrides' : ''}: valid\n`,
      );
      process.stdout.write(stringify(effectiveConfig(config)));
    }
    return 0;
  },
};
