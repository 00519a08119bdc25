import t from 'tap';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { usesGlibc } from '../../src/runtime/malloc-tuning.js';
import { cleanEnv, plainNode } from '../helpers/process.js';

/**
 * Issue 16: memory freed in bursts (a push's chunks, freed once written and hashed) stays in the process for the next
 * reads instead of going back to the kernel and being faulted in again page by page (src/runtime/malloc-tuning.ts).
 * Each case is its own process: glibc's thresholds are process-wide.
 */

const glibc = usesGlibc();

async function faultsPerRound(mode: 'default' | 'tuned'): Promise<number> {
  const script = fileURLToPath(new URL('../helpers/malloc-churn.js', import.meta.url));
  const [command, args] = plainNode([script, mode]);
  const { stdout } = await promisify(execFile)(command, args, { env: cleanEnv({}) });
  return Number(stdout.trim());
}

// 4 MiB freed and taken again per round is 1024 pages.
t.test('untuned, glibc gives a freed burst back to the kernel and faults it in again', { skip: !glibc && 'not glibc' }, async (t) => {
  const faults = await faultsPerRound('default');
  t.ok(faults > 200, `${faults} page faults per 4 MiB round (the behaviour the tuning is for)`);
});

t.test('tuned, a freed burst is reused without page faults', { skip: !glibc && 'not glibc' }, async (t) => {
  const faults = await faultsPerRound('tuned');
  t.ok(faults < 100, `${faults} page faults per 4 MiB round: fewer than 100 of 1024 pages`);
});

t.test('elsewhere the tuning does nothing and says so', { skip: glibc && 'glibc' }, async (t) => {
  const { raiseMallocTrimThreshold } = await import('../../src/runtime/malloc-tuning.js');
  t.equal(raiseMallocTrimThreshold(), false);
});
