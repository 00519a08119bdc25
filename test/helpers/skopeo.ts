import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanEnv } from './process.js';

/** Options for one skopeo run. */
export interface SkopeoOptions {
  /** Kill skopeo (SIGKILL) and fail after this long; default 120 s. */
  timeoutMs?: number;
}

const SKOPEO = '/usr/bin/skopeo';
const DEFAULT_TIMEOUT_MS = 120_000;

/**
 * Runs `skopeo <args>` with a throw-away HOME/XDG directories, an empty registries.conf, no auth file and a
 * signature policy that accepts everything, so nothing of the user's or the machine's container configuration takes
 * part. Resolves with stdout; rejects with an error carrying the command line, exit status and stderr.
 */
export async function skopeo(args: string[], options: SkopeoOptions = {}): Promise<string> {
  const home = await mkdtemp(join(tmpdir(), 'berth-skopeo-'));
  try {
    const policy = join(home, 'policy.json');
    const registriesConf = join(home, 'registries.conf');
    const registriesD = join(home, 'registries.d');
    await mkdir(registriesD);
    await mkdir(join(home, 'run'), { mode: 0o700 });
    await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    await writeFile(registriesConf, 'unqualified-search-registries = []\n');
    const env: NodeJS.ProcessEnv = {
      ...cleanEnv(),
      HOME: home,
      XDG_RUNTIME_DIR: join(home, 'run'),
      XDG_CONFIG_HOME: join(home, 'config'),
      XDG_DATA_HOME: join(home, 'data'),
      XDG_CACHE_HOME: join(home, 'cache'),
      REGISTRY_AUTH_FILE: join(home, 'auth.json'),
      CONTAINERS_REGISTRIES_CONF: registriesConf,
      TMPDIR: home,
    };
    const full = ['--policy', policy, '--registries.d', registriesD, ...args];
    return await new Promise<string>((resolve, reject) => {
      execFile(
        SKOPEO,
        full,
        { env, timeout: options.timeoutMs ?? DEFAULT_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 64 << 20, encoding: 'utf8' },
        (err, stdout, stderr) => {
          if (err) {
            const how = err.killed ? `killed after ${options.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms` : `exit ${String(err.code)}`;
            reject(new Error(`skopeo ${args.join(' ')}: ${how}\n${stderr}`));
          } else {
            resolve(stdout);
          }
        },
      );
    });
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

/** `docker://` reference for `repo:tagOrDigest` on a registry at `url` (`http://127.0.0.1:PORT`). */
export function dockerRef(url: string, repo: string, ref: string): string {
  const host = url.replace(/^https?:\/\//, '');
  return `docker://${host}/${repo}${ref.includes(':') ? '@' : ':'}${ref}`;
}
