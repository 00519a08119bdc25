import t from 'tap';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { heapTuningFlags } from '../../src/runtime/heap-tuning.js';
import { cleanEnv, plainNode } from '../helpers/process.js';

const TUNED = ['--semi-space-growth-factor=1', '--heap-growing-percent=50'];

t.test('berth tunes the V8 heap unless the operator set heap flags of their own', async (t) => {
  const rows: Array<[string, string[], string | undefined, string[]]> = [
    ['plain node', [], undefined, TUNED],
    ['unrelated flags', ['--enable-source-maps'], '--dns-result-order=ipv4first', TUNED],
    ['a bigger old space only', ['--max-old-space-size=4096'], '', TUNED],
    ['semi-space size on the command line', ['--max-semi-space-size=8'], '', []],
    ['semi-space size in NODE_OPTIONS', [], '--enable-source-maps --max-semi-space-size=8', []],
    ['heap growing in NODE_OPTIONS', [], '--heap-growing-percent=100', []],
    ['optimize for size', ['--optimize-for-size'], '', []],
    ['a flag that only contains the name', ['--no-warnings'], 'X--max-semi-space-size', TUNED],
  ];
  for (const [name, execArgv, nodeOptions, want] of rows) t.same(heapTuningFlags(execArgv, nodeOptions), want, name);
});

t.test('the young generation keeps its size after a hashing thread starts (starting a worker resets runtime flags)', async (t) => {
  const script = fileURLToPath(new URL('../helpers/heap-after-thread.js', import.meta.url));
  const [command, args] = plainNode([script]);
  const { stdout } = await promisify(execFile)(command, args, { env: cleanEnv({}) });
  const newSpace = Number(stdout.trim());
  t.ok(newSpace > 0 && newSpace <= 8 * 1024 * 1024, `new space ${newSpace} bytes: at most 8 MiB (V8's default grows it to 16-32 MiB)`);
});
