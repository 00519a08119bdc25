import { Transform, type TransformCallback } from 'node:stream';
import { Terse } from '@tapjs/reporter';

/**
 * The test reporter `npm test` uses (package.json `tap.reporter`). On a terminal: tap's `terse` progress display.
 * Otherwise (piped to a file, CI): plain TAP with no escape codes, one line per test file, and the full output of a
 * file only when it fails, so a log reads cleanly. The summary comment `# { total: N, pass: N }` stays last.
 */
export class PlainSummary extends Transform {
  private rest = '';
  private block: string[] = [];
  private inDiagnostics = false;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const lines = (this.rest + chunk.toString('utf8')).split('\n');
    this.rest = lines.pop() ?? '';
    for (const line of lines) this.line(line);
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.rest) this.line(this.rest);
    if (this.block.length > 0) this.push(`${this.block.join('\n')}\n`);
    done();
  }

  private line(line: string): void {
    // The YAML diagnostics of a top-level result (`  ---` ... `  ...`) belong to it.
    if (this.inDiagnostics || line === '  ---') {
      this.inDiagnostics = line !== '  ...';
      this.push(`${line}\n`);
      return;
    }
    // A file's own output is indented under `# Subtest: FILE`; its result line `ok N - FILE` is not.
    if (line.startsWith('    ') || line.startsWith('# Subtest:')) {
      this.block.push(line);
      return;
    }
    if (line === '') return;
    if (line.startsWith('not ok') || line.startsWith('Bail out!')) this.push(`${this.block.join('\n')}\n`);
    if (line.startsWith('ok') || line.startsWith('not ok')) this.block = [];
    this.push(`${line}\n`);
  }
}

export default process.stdout.isTTY ? Terse : PlainSummary;
