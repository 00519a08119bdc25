import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { ChangeListeners, secureContextOf, type CertificateSource, type KeyPair } from './certificate-source.js';
import type { LetsEncryptSettings } from '../config/letsencrypt.js';

/** What `http.tls.letsencrypt.cachefile` holds (JSON, mode 0600). */
interface CacheFile {
  directoryUrl: string;
  accountKey: string;
  accountUrl?: string;
  hosts?: string[];
  key?: string;
  cert?: string;
}

/** Options of {@link AcmeCertificateSource}. */
export interface AcmeOptions {
  settings: LetsEncryptSettings;
  logger: Logger;
  /** Wait after a failed order before the next try (default 10 minutes). */
  retryMs?: number;
}

const DAY = 86_400_000;
/** The longest a single timer waits; the renewal time is checked again after it (setTimeout caps at ~24.8 days). */
const MAX_TIMER_MS = 12 * 3_600_000;

/**
 * When a certificate is renewed: 30 days before it expires, or with a third of its lifetime left when it lives for
 * less than 90 days (Let's Encrypt's own advice for its 90-day certificates, and what lets a test with a CA that issues
 * for seconds see a renewal).
 */
export function renewalTime(cert: X509Certificate): number {
  const notBefore = Date.parse(cert.validFrom);
  const notAfter = Date.parse(cert.validTo);
  return notAfter - Math.min(30 * DAY, (notAfter - notBefore) / 3);
}

/**
 * Certificates from an ACME CA (Let's Encrypt, or any RFC 8555 directory) for `http.tls.letsencrypt.hosts`, using the
 * TLS-ALPN-01 challenge (RFC 8737) answered on the registry's own HTTPS port, as registry:2 does: no port 80 needed.
 * The account key, the certificate and its key are kept in `cachefile`, so a restart reuses them instead of ordering
 * again; a timer renews the certificate before it expires while the server keeps running.
 */
export class AcmeCertificateSource implements CertificateSource {
  private cache: CacheFile | null = null;
  private pair: KeyPair | null = null;
  private readonly listeners = new ChangeListeners();
  private readonly challenges = new Map<string, KeyPair>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private closed = false;

  private constructor(private readonly options: AcmeOptions) {}

  /** Loads `cachefile` when it exists; a file that is there but unreadable stops startup with its name. */
  static async open(options: AcmeOptions): Promise<AcmeCertificateSource> {
    const source = new AcmeCertificateSource(options);
    const file = options.settings.cacheFile;
    let text: string | undefined;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new Error(`http.tls.letsencrypt.cachefile ${file}: ${(err as Error).message}`, { cause: err });
    }
    if (text !== undefined) {
      let cache: CacheFile;
      try {
        cache = JSON.parse(text) as CacheFile;
      } catch {
        throw new Error(`http.tls.letsencrypt.cachefile ${file}: not a berth ACME cache file (invalid JSON)`);
      }
      if (typeof cache.accountKey !== 'string')
        throw new Error(`http.tls.letsencrypt.cachefile ${file}: not a berth ACME cache file (no account key)`);
      // An account belongs to one CA: a cache from another directory keeps nothing but is overwritten on the next order.
      if (cache.directoryUrl === options.settings.directoryUrl) {
        source.cache = cache;
        if (cache.key && cache.cert && source.covers(cache)) {
          const pair = { key: Buffer.from(cache.key), cert: Buffer.from(cache.cert) };
          try {
            secureContextOf(pair);
            if (Date.parse(new X509Certificate(pair.cert).validTo) > Date.now()) source.pair = pair;
          } catch (err) {
            options.logger.warn({ err, cachefile: file }, 'the certificate in the ACME cache file does not load; ordering a new one');
          }
        }
      }
    }
    return source;
  }

  current(): KeyPair | null {
    return this.pair;
  }

  onChange(listener: () => void): () => void {
    return this.listeners.add(listener);
  }

  /** The TLS-ALPN-01 challenge certificate for `servername`, while an order for it is pending. */
  challengeCertificate(servername: string): KeyPair | undefined {
    return this.challenges.get(servername.toLowerCase());
  }

  async start(): Promise<void> {
    if (this.running || this.closed) return;
    this.schedule(0);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(delayMs: number): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(
      () => {
        this.running = this.check().finally(() => {
          this.running = undefined;
        });
      },
      Math.max(0, Math.min(delayMs, MAX_TIMER_MS)),
    );
    this.timer.unref();
  }

  /** Orders when there is no certificate or it is due for renewal, then sleeps until the next renewal time. */
  private async check(): Promise<void> {
    const { logger, settings } = this.options;
    try {
      if (!this.pair || Date.now() >= renewalTime(new X509Certificate(this.pair.cert))) {
        const renewing = this.pair !== null;
        await this.order();
        const cert = new X509Certificate(this.pair!.cert);
        logger.info(
          { hosts: settings.hosts, serial: cert.serialNumber, notAfter: new Date(cert.validTo).toISOString() },
          renewing ? 'ACME certificate renewed' : 'ACME certificate obtained',
        );
        this.listeners.emit();
      }
      this.schedule(renewalTime(new X509Certificate(this.pair!.cert)) - Date.now());
    } catch (err) {
      if (this.closed) return;
      const retryMs = this.options.retryMs ?? 10 * 60_000;
      logger.error(
        { err: { message: (err as Error).message }, directory: settings.directoryUrl, hosts: settings.hosts, retryInMs: retryMs },
        'ACME order failed',
      );
      this.schedule(retryMs);
    }
  }

  private async order(): Promise<void> {
    const { settings } = this.options;
    // Loaded when used: a registry with its own certificate files never loads the ACME client.
    const acme = await import('acme-client');
    if (!this.cache) {
      this.cache = { directoryUrl: settings.directoryUrl, accountKey: (await acme.crypto.createPrivateEcdsaKey()).toString() };
      await this.save();
    }
    const client = new acme.Client({
      directoryUrl: settings.directoryUrl,
      accountKey: this.cache.accountKey,
      ...(this.cache.accountUrl ? { accountUrl: this.cache.accountUrl } : {}),
    });
    const [key, csr] = await acme.crypto.createCsr(
      { commonName: settings.hosts[0], altNames: settings.hosts },
      await acme.crypto.createPrivateEcdsaKey(),
    );
    const cert = await client.auto({
      csr,
      ...(settings.email ? { email: settings.email } : {}),
      termsOfServiceAgreed: true,
      challengePriority: ['tls-alpn-01'],
      // The CA connects to this server; a check from inside would only test the loopback path.
      skipChallengeVerification: true,
      challengeCreateFn: async (authz, challenge, keyAuthorization) => {
        if ((challenge.type as string) !== 'tls-alpn-01') throw new Error(`the CA offers no tls-alpn-01 challenge for ${authz.identifier.value}`);
        const [challengeKey, challengeCert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization);
        this.challenges.set(authz.identifier.value.toLowerCase(), { key: challengeKey, cert: challengeCert });
      },
      challengeRemoveFn: async (authz) => {
        this.challenges.delete(authz.identifier.value.toLowerCase());
      },
    });
    const pair = { key, cert: Buffer.from(cert) };
    secureContextOf(pair);
    this.pair = pair;
    this.cache = { ...this.cache, accountUrl: client.getAccountUrl(), hosts: settings.hosts, key: key.toString(), cert };
    await this.save();
  }

  private covers(cache: CacheFile): boolean {
    const hosts = this.options.settings.hosts;
    return cache.hosts !== undefined && hosts.length === cache.hosts.length && hosts.every((h) => cache.hosts!.includes(h));
  }

  /** Writes the cache file next to itself and renames it into place, readable by the server's user only. */
  private async save(): Promise<void> {
    const file = this.options.settings.cacheFile;
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.tmp-${process.pid}`;
    await writeFile(tmp, `${JSON.stringify(this.cache, null, 2)}\n`, { mode: 0o600 });
    await rename(tmp, file);
  }
}
