import { createSecureContext, type SecureContext } from 'node:tls';

/** A private key and the certificate chain that goes with it, both PEM. */
export interface KeyPair {
  key: Buffer;
  cert: Buffer;
}

/**
 * Where the HTTPS listener gets its certificate: files that are reloaded when they change, or ACME. The listener asks
 * `current()` for every new connection's context and is told through `onChange` when there is a new one; connections
 * already open keep the certificate they were made with.
 */
export interface CertificateSource {
  /** The certificate in use, or null while there is none yet (ACME before the first order completes). */
  current(): KeyPair | null;
  /** Calls `listener` after the certificate changed; returns a function that stops it. */
  onChange(listener: () => void): () => void;
  /** Starts watching/renewing; called once the listener accepts connections (ACME answers its challenges there). */
  start(): Promise<void>;
  /** Stops timers and watchers. */
  close(): Promise<void>;
}

/**
 * Checks that `pair` makes a usable TLS context (the key matches the certificate) and returns that context. Throws the
 * TLS error otherwise, so a half-rotated pair is never served.
 */
export function secureContextOf(pair: KeyPair): SecureContext {
  return createSecureContext({ key: pair.key, cert: pair.cert });
}

/** A tiny listener list shared by the sources. */
export class ChangeListeners {
  private readonly listeners = new Set<() => void>();

  add(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(): void {
    for (const l of this.listeners) l();
  }
}
