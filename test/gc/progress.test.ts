import { Writable } from 'node:stream';
import t from 'tap';
import { pino } from 'pino';
import { createProgress, formatBytes } from '../../src/gc/progress.js';

/** A writable that keeps what it is given, optionally claiming to be a terminal. */
function sink(isTTY: boolean): Writable & { isTTY: boolean; text(): string } {
  const chunks: string[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString('utf8'));
      done();
    },
  });
  return Object.assign(w, { isTTY, columns: 120, text: () => chunks.join('') });
}

t.test('a progress bar on a terminal', async (t) => {
  const out = sink(true);
  const p = createProgress(out);
  p.start('checking blobs', 4);
  p.tick(2);
  await new Promise((r) => setTimeout(r, 120));
  p.tick();
  p.done();
  const text = out.text();
  t.match(text, '\r\x1b[Kchecking blobs [------------------------------] 0% 0/4');
  t.match(text, `checking blobs [${'#'.repeat(23)}${'-'.repeat(7)}] 75% 3/4`);
  t.ok(text.endsWith('\r\x1b[K'), 'the line is cleared at the end');
});

t.test('log lines elsewhere', async (t) => {
  const out = sink(false);
  const logs = sink(false);
  const p = createProgress(out, pino({ level: 'info' }, logs), 0);
  p.start('hashing blobs', 2000, 'bytes');
  p.tick(1000);
  p.done();
  t.equal(out.text(), '', 'nothing drawn on a non-terminal');
  const lines = logs
    .text()
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { msg: string; phase: string; done: number; total: number });
  t.ok(lines.length >= 2);
  t.same(lines.map((l) => [l.msg, l.phase, l.done, l.total]).at(-1), ['progress', 'hashing blobs', 1000, 2000]);
});

t.test('sizes', async (t) => {
  t.equal(formatBytes(999), '999 B');
  t.equal(formatBytes(1500), '1.50 kB');
  t.equal(formatBytes(2_500_000_000), '2.50 GB');
});
