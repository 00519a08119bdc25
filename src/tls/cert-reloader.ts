import { watchFile, unwatchFile, type Stats } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { ChangeListeners, secureContextOf, type CertificateSource, type KeyPair } from './certificate-source.js';

/** Options of {@link FileCertificateSource}. */
export interface FileCertificateOptions {
  certificate: string;
  key: string;
  logger: Logger;
  /** How often the files' status is checked (default 5 s). `fs.watchFile` polls, so symlink swaps are seen too. */
  pollIntervalMs?: number;
}

/**
 * `http.tls.certificate`/`key`, reloaded when either file changes. Works with cert-manager's Secret volumes, where the
 * files are symlinks into a directory that is swapped atomically: the files are polled by `stat` (which follows the
 * links), not watched by inode. A pair that does not load (the certificate written but not yet the key) keeps the
 * previous certificate in use and is tried again at the next change.
 */
export class FileCertificateSource implements CertificateSource {
  private pair: KeyPair | null = null;
  private readonly listeners = new ChangeListeners();
  private watching = false;
  private reloading: Promise<void> = Promise.resolve();

  private constructor(private readonly options: FileCertificateOptions) {}

  /** Reads both files once; a missing or mismatched pair stops startup. */
  static async open(options: FileCertificateOptions): Promise<FileCertificateSource> {
    const source = new FileCertificateSource(options);
    const pair = await source.read();
    secureContextOf(pair);
    source.pair = pair;
    return source;
  }

  current(): KeyPair | null {
    return this.pair;
  }

  onChange(listener: () => void): () => void {
    return this.listeners.add(listener);
  }

  async start(): Promise<void> {
    if (this.watching) return;
    this.watching = true;
    const interval = this.options.pollIntervalMs ?? 5000;
    for (const file of [this.options.certificate, this.options.key]) {
      watchFile(file, { interval, persistent: false }, this.changed);
    }
  }

  async close(): Promise<void> {
    if (!this.watching) return;
    this.watching = false;
    unwatchFile(this.options.certificate, this.changed);
    unwatchFile(this.options.key, this.changed);
    await this.reloading;
  }

  private readonly changed = (curr: Stats, prev: Stats): void => {
    if (curr.mtimeMs === prev.mtimeMs && curr.ino === prev.ino && curr.size === prev.size) return;
    this.reloading = this.reloading.then(() => this.reload());
  };

  private async reload(): Promise<void> {
    const { logger, certificate } = this.options;
    let pair: KeyPair;
    try {
      pair = await this.read();
      secureContextOf(pair);
    } catch (err) {
      logger.warn({ err, certificate }, 'TLS certificate and key do not load together yet; still serving the previous certificate');
      return;
    }
    if (this.pair && pair.cert.equals(this.pair.cert) && pair.key.equals(this.pair.key)) return;
    this.pair = pair;
    logger.info({ certificate }, 'TLS certificate reloaded');
    this.listeners.emit();
  }

  private async read(): Promise<KeyPair> {
    const [cert, key] = await Promise.all([readFile(this.options.certificate), readFile(this.options.key)]);
    return { cert, key };
  }
}
