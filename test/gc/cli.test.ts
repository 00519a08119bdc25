import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { startBerth } from '../helpers/berth.js';
import { tempDir } from '../helpers/ports.js';
import { plainNode } from '../helpers/process.js';
import { randomLayer, RegistryClient } from '../helpers/registry-client.js';
import { blobFile } from './tree.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** Runs the berth CLI with a clean environment; resolves with its exit status and output. */
function berth(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('AWS_') && !k.startsWith('REGISTRY_') && k !== 'BERTH_CONFIG') env[k] = v;
  }
  return new Promise((resolve) => {
    execFile(...plainNode([MAIN, ...args]), { env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

interface UsageJson {
  repositories: Array<{ repository: string; tags: number; manifests: number; bytes: number; uniqueBytes: number; sharedBytes: number }>;
  totals: { storedBytes: number; referencedBytes: number; blobs: number };
  reclaimable: { gc: { bytes: number; blobs: number }; deleteUntagged: { bytes: number; blobs: number; manifests: number } };
}

t.test('berth du, gc and fsck on the command line', async (t) => {
  const running = await startBerth(t);
  const client = new RegistryClient(running.url);
  const shared = randomLayer(2048);
  const a = await client.pushImage('app', 'a', [shared, randomLayer(3000)]);
  const b = await client.pushImage('app', 'b', [shared, randomLayer(4000)]);
  const c = await client.pushImage('other', 'c', [shared], { from: 'app' });
  await client.deleteManifest('app', 'a');

  const dir = await tempDir(t, 'berth-gc-cli-');
  const cfg = join(dir, 'config.yml');
  await writeFile(cfg, `version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${running.root}\n`);

  // ---- du ----
  const du = await berth(['du', cfg, '--json', '--grace', '0']);
  t.equal(du.code, 0, du.stderr);
  const report = JSON.parse(du.stdout) as UsageJson;
  const appBytes = a.manifest.size + a.config.size + 3000 + b.manifest.size + b.config.size + 4000 + 2048;
  t.same(
    report.repositories.map((r) => ({ ...r })),
    [
      { repository: 'app', tags: 1, manifests: 2, blobs: 7, bytes: appBytes, uniqueBytes: appBytes - 2048, sharedBytes: 2048 },
      {
        repository: 'other',
        tags: 1,
        manifests: 1,
        blobs: 3,
        bytes: c.manifest.size + c.config.size + 2048,
        uniqueBytes: c.manifest.size + c.config.size,
        sharedBytes: 2048,
      },
    ],
  );
  t.equal(report.totals.storedBytes, appBytes + c.manifest.size + c.config.size, 'every stored byte counted once');
  t.equal(report.reclaimable.gc.bytes, 0, 'plain gc would reclaim nothing (the untagged manifest is kept)');
  t.equal(report.reclaimable.deleteUntagged.bytes, a.manifest.size + a.config.size + 3000);
  t.equal(report.reclaimable.deleteUntagged.manifests, 1);
  const table = await berth(['du', cfg, '--grace', '0']);
  t.equal(table.code, 0);
  t.match(table.stdout, /^REPOSITORY\s+TAGS\s+MANIFESTS\s+SIZE\s+UNIQUE\s+SHARED\n/);
  t.match(table.stdout, /\napp\s+1\s+2\s/);
  t.match(table.stdout, /Reclaimable:/);
  // The pushes left their folders behind, empty, for the next uploads: no upload is in progress.
  t.ok((await readdir(join(running.root, 'docker/registry/v2/repositories/app/_uploads'))).length > 0, 'a kept upload folder');
  t.match(table.stdout, /\nUploads: +0 in progress or abandoned \(0 B\)/);

  // ---- gc: dry run, then the real run reports the same lines ----
  const expected = [`manifest app@${a.manifest.digest}`, `blob ${a.manifest.digest}`, `blob ${a.config.digest}`, `blob ${a.layers[1]?.digest}`];
  const dry = await berth(['gc', cfg, '--dry-run', '--delete-untagged', '--grace', '0']);
  t.equal(dry.code, 0, dry.stderr);
  const dryLines = dry.stdout.split('\n').filter((l) => l.startsWith('would delete '));
  t.same(dryLines.map((l) => l.replace(/^would delete /, '').replace(/ \(.*$/, '')).sort(), expected.sort());
  t.match(dry.stdout, /gc dry run: would delete 1 untagged manifest, 3 blobs/);
  t.not((await readFile(blobFile(running.root, a.layers[1]?.digest ?? ''))).length, 0, 'dry run deleted nothing');

  const real = await berth(['gc', cfg, '--delete-untagged', '--grace=0']);
  t.equal(real.code, 0, real.stderr);
  const realLines = real.stdout.split('\n').filter((l) => l.startsWith('deleted '));
  t.same(realLines.map((l) => l.replace(/^deleted /, '')).sort(), dryLines.map((l) => l.replace(/^would delete /, '')).sort());
  t.match(real.stdout, /gc: deleted 1 untagged manifest, 3 blobs/);
  t.same(await client.pull('app', 'b'), []);
  t.same(await client.pull('other', 'c'), []);

  // ---- fsck ----
  const ok = await berth(['fsck', cfg]);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /0 problems/);
  const victim = blobFile(running.root, b.layers[1]?.digest ?? '');
  const bytes = await readFile(victim);
  bytes[0] = (bytes[0] ?? 0) ^ 1;
  await writeFile(victim, bytes);
  const bad = await berth(['fsck', cfg]);
  t.equal(bad.code, 1, 'problems found: exit status 1');
  t.match(bad.stdout, new RegExp(`corrupt blob ${b.layers[1]?.digest}`));

  // ---- usage errors ----
  const wrong = await berth(['gc', cfg, '--grace', 'soon']);
  t.equal(wrong.code, 2);
  t.match(wrong.stderr, /--grace: expected a duration/);
  t.equal((await berth(['du', cfg, '--bogus'])).code, 2);
});

t.test('berth gc from the command line records its outcome where the server metrics show it', async (t) => {
  // Issue 17: "`berth gc` run from the CLI reports its outcome where the server's metrics can show it (last run,
  // bytes freed)."
  const running = await startBerth(t, { storage: { delete: { enabled: true } } });
  const client = new RegistryClient(running.url);
  const gone = await client.pushImage('app', 'old', [randomLayer(5000)]);
  await client.pushImage('app', 'kept', [randomLayer(1000)]);
  await client.deleteManifest('app', gone.manifest.digest);
  const sample = (text: string, name: string) =>
    text
      .split('\n')
      .find((l) => l.startsWith(`${name} `))
      ?.slice(name.length + 1);
  const before = await (await fetch(`${running.url}/metrics`)).text();
  t.equal(sample(before, 'berth_gc_last_run_freed_bytes'), '0', 'no run recorded yet');

  const dir = await tempDir(t, 'berth-gc-last-');
  const cfg = join(dir, 'config.yml');
  await writeFile(cfg, `version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${running.root}\n`);
  const t0 = Date.now();
  const gc = await berth(['gc', cfg, '--grace', '0']);
  t.equal(gc.code, 0, gc.stderr);
  const freed = gone.manifest.size + gone.config.size + 5000;
  const status = JSON.parse(await readFile(join(running.root, '_berth/gc-last.json'), 'utf8')) as Record<string, unknown>;
  t.match(status, { bytesFreed: freed, blobsDeleted: 3, source: 'cli', interrupted: false });

  const after = await (await fetch(`${running.url}/metrics`)).text();
  t.equal(sample(after, 'berth_gc_last_run_freed_bytes'), String(freed), 'the server shows the bytes the CLI run freed');
  const at = Number(sample(after, 'berth_gc_last_run_timestamp_seconds'));
  t.ok(at * 1000 >= t0 - 1000, 'and when it ran');
  t.same(await client.pull('app', 'kept'), [], 'the kept image still pulls');
  const dry = await berth(['gc', cfg, '--grace', '0', '--dry-run']);
  t.equal(dry.code, 0);
  t.match(JSON.parse(await readFile(join(running.root, '_berth/gc-last.json'), 'utf8')), { bytesFreed: freed }, 'a dry run records nothing');
});
