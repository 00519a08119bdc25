import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { isAbsolute } from 'node:path';
import t from 'tap';
import { BERTH_MAIN, cleanEnv, spawnBerth } from '../helpers/berth-process.js';
import { tempDir } from '../helpers/ports.js';

/**
 * Issue 17: "Human-readable text on a terminal and JSON when the output is not a terminal, unless log.formatter says
 * otherwise; times as ISO 8601, paths absolute in the startup line." The terminal is a real pseudo-terminal made by
 * util-linux `script`.
 */

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** Runs `berth serve` inside `script` (a pseudo-terminal) until its startup line appears; returns what it printed. */
async function serveOnTerminal(env: Record<string, string>, cwd: string): Promise<string> {
  // env -u NODE_OPTIONS: a plain node process, without tap's loader (see plainNode).
  const command = `exec env -u NODE_OPTIONS ${JSON.stringify(process.execPath)} ${JSON.stringify(BERTH_MAIN)} serve`;
  const proc = spawn('script', ['-qfec', command, '/dev/null'], { env: cleanEnv(env), cwd, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  let out = '';
  const exited = once(proc, 'exit');
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no startup line on the terminal:\n${out}`)), 15_000);
      proc.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        if (/listening/.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } finally {
    if (proc.pid !== undefined && proc.exitCode === null) process.kill(-proc.pid, 'SIGTERM');
    await exited;
  }
  return out;
}

t.test('on a terminal: one readable text line per record, ISO time, the storage root absolute', async (t) => {
  const dir = await tempDir(t, 'berth-logtty-');
  const out = await serveOnTerminal({ REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: 'data', REGISTRY_HTTP_ADDR: '127.0.0.1:0' }, dir);
  const line = out.split(/\r?\n/).find((l) => l.includes('listening')) ?? '';
  const [time, level] = line.split(' ');
  t.match(time, ISO, `ISO 8601 time first: ${line}`);
  t.equal(level, 'INFO');
  t.notMatch(line, /^\{/, 'not JSON');
  t.match(line, ` filesystem ${dir}/data`, 'the relative root is shown absolute');
});

t.test('on a pipe: JSON lines with an ISO time and the absolute storage root; log.formatter text overrides', async (t) => {
  const dir = await tempDir(t, 'berth-logpipe-');
  const berth = await spawnBerth(t, { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir });
  const startup = berth.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((r) => /listening/.test(String(r.msg)));
  t.ok(startup, 'the startup line is JSON');
  t.match(startup?.time, ISO);
  t.equal(startup?.storage, `filesystem ${dir}`);
  t.ok(isAbsolute(dir));
  await berth.stop();

  const text = await spawnBerth(t, { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir, REGISTRY_LOG_FORMATTER: 'text' });
  const line = text.logs.find((l) => /listening/.test(l)) ?? '';
  t.match(line.split(' ')[0], ISO, 'log.formatter: text on a pipe writes text');
  const json = await spawnBerth(t, { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: dir, REGISTRY_LOG_FORMATTER: 'json' });
  t.doesNotThrow(() => JSON.parse(json.logs.find((l) => /listening/.test(l)) ?? '') as unknown, 'log.formatter: json writes JSON');
});
