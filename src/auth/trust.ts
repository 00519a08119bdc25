import { createPublicKey, X509Certificate, type JsonWebKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { Logger } from 'pino';
import { ConfigError } from '../config/fields.js';
import { libtrustKeyId, parseCertificateBundle } from './x509.js';

/** A key tokens may be signed with, and the `kid` values that name it. */
export interface TrustedKey {
  key: KeyObject;
  kids: Set<string>;
}

/** The parts of a JWS protected header that select the key. */
export interface KeyHints {
  kid?: unknown;
  x5c?: unknown;
}

/** Names a public key by its libtrust key id (Distribution 2.x) and its RFC 7638 JWK thumbprint. */
export async function keyIds(key: KeyObject): Promise<string[]> {
  const jwk = key.export({ format: 'jwk' }) as JWK;
  return [libtrustKeyId(key), await calculateJwkThumbprint(jwk, 'sha256')];
}

async function trusted(key: KeyObject, extraKid?: string): Promise<TrustedKey> {
  const kids = new Set(await keyIds(key));
  if (extraKid) kids.add(extraKid);
  return { key, kids };
}

function certValidAt(cert: X509Certificate, now: number): boolean {
  return Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
}

/** A public key from a JWK; symmetric (`oct`) keys are refused so no HMAC secret can be confused with a public key. */
async function fromJwk(jwk: Record<string, unknown>): Promise<TrustedKey> {
  if (jwk.kty !== 'EC' && jwk.kty !== 'RSA' && jwk.kty !== 'OKP') throw new Error(`unsupported key type ${JSON.stringify(jwk.kty)}`);
  const key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
  return trusted(key, typeof jwk.kid === 'string' ? jwk.kid : undefined);
}

async function parseJwks(json: unknown, source: string): Promise<TrustedKey[]> {
  const keys = typeof json === 'object' && json !== null ? (json as { keys?: unknown }).keys : undefined;
  if (!Array.isArray(keys)) throw new Error(`${source}: expected a JWK set {"keys": [...]}`);
  const out: TrustedKey[] = [];
  for (const k of keys) {
    if (typeof k !== 'object' || k === null) continue;
    const jwk = k as Record<string, unknown>;
    if (jwk.use !== undefined && jwk.use !== 'sig') continue;
    out.push(await fromJwk(jwk));
  }
  return out;
}

export interface TrustStoreOptions {
  /** PEM certificate bundle (`auth.token.rootcertbundle`). */
  rootCertBundle?: string;
  /** JWKS file path or http(s) URL (`auth.token.jwks`). */
  jwks?: string;
  /** Certificates trusted in addition (berth's own token signing certificate). */
  certificates?: X509Certificate[];
  logger?: Logger;
  /** How long a fetched remote JWKS is used before it is fetched again. */
  jwksTtlMs?: number;
}

/**
 * The keys the registry trusts for Bearer tokens, chosen the way Distribution chooses them:
 * a token header with `x5c` must carry a certificate chain ending at a bundle certificate (the leaf signs);
 * otherwise its `kid` must name a trusted key (libtrust key id, JWK thumbprint, or a JWKS `kid`);
 * without either, every trusted key is tried.
 */
export class TrustStore {
  private roots: X509Certificate[] = [];
  private keys: TrustedKey[] = [];
  private remote: TrustedKey[] = [];
  private remoteFetchedAt = 0;

  private constructor(private readonly options: TrustStoreOptions) {}

  /** Loads the bundle and a JWKS file; a bad file is a ConfigError naming the key. */
  static async create(options: TrustStoreOptions): Promise<TrustStore> {
    const store = new TrustStore(options);
    const roots = [...(options.certificates ?? [])];
    if (options.rootCertBundle) {
      let certs: X509Certificate[];
      try {
        certs = parseCertificateBundle(await readFile(options.rootCertBundle, 'utf8'));
      } catch (err) {
        throw new ConfigError(`auth.token.rootcertbundle: cannot load ${options.rootCertBundle}: ${(err as Error).message}`);
      }
      if (certs.length === 0) throw new ConfigError(`auth.token.rootcertbundle: no certificate in ${options.rootCertBundle}`);
      roots.push(...certs);
    }
    store.roots = roots;
    store.keys = await Promise.all(roots.map((c) => trusted(c.publicKey)));
    if (options.jwks && !/^https?:\/\//.test(options.jwks)) {
      try {
        store.keys.push(...(await parseJwks(JSON.parse(await readFile(options.jwks, 'utf8')), options.jwks)));
      } catch (err) {
        throw new ConfigError(`auth.token.jwks: cannot load ${options.jwks}: ${(err as Error).message}`);
      }
    }
    return store;
  }

  /** Keys that may have signed a token with this header; empty when none is trusted. */
  async candidates(header: KeyHints, now = Date.now()): Promise<KeyObject[]> {
    if (header.x5c !== undefined) {
      const key = this.verifyChain(header.x5c, now);
      return key ? [key] : [];
    }
    if (typeof header.kid === 'string' && header.kid !== '') {
      const kid = header.kid;
      let found = [...this.keys, ...this.remote].filter((k) => k.kids.has(kid));
      if (found.length === 0 && (await this.refreshRemote(true))) found = this.remote.filter((k) => k.kids.has(kid));
      return found.map((k) => k.key);
    }
    await this.refreshRemote(false);
    return [...this.keys, ...this.remote].map((k) => k.key);
  }

  /** The leaf key when `x5c` (standard base64 DER, leaf first) chains to a trusted certificate, else undefined. */
  private verifyChain(x5c: unknown, now: number): KeyObject | undefined {
    if (!Array.isArray(x5c) || x5c.length === 0 || x5c.length > 10) return undefined;
    let certs: X509Certificate[];
    try {
      certs = x5c.map((c) => {
        if (typeof c !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(c)) throw new Error('bad x5c entry');
        return new X509Certificate(Buffer.from(c, 'base64'));
      });
    } catch {
      return undefined;
    }
    if (!certs.every((c) => certValidAt(c, now))) return undefined;
    const leaf = certs[0];
    if (!leaf) return undefined;
    let current = leaf;
    for (let i = 0; ; i++) {
      if (this.roots.some((r) => r.raw.equals(current.raw))) return leaf.publicKey;
      const root = this.roots.find((r) => r.ca && certValidAt(r, now) && current.checkIssued(r) && current.verify(r.publicKey));
      if (root) return leaf.publicKey;
      const next = certs[i + 1];
      if (!next || !next.ca || !current.checkIssued(next) || !current.verify(next.publicKey)) return undefined;
      current = next;
    }
  }

  /** Fetches a remote JWKS when stale (or, when `unknownKid`, at most every 30 s); true when it fetched. */
  private async refreshRemote(unknownKid: boolean): Promise<boolean> {
    const url = this.options.jwks;
    if (!url || !/^https?:\/\//.test(url)) return false;
    const age = Date.now() - this.remoteFetchedAt;
    const ttl = this.options.jwksTtlMs ?? 300_000;
    if (age < ttl && !(unknownKid && age > 30_000)) return false;
    this.remoteFetchedAt = Date.now();
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(10_000), headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      this.remote = await parseJwks(await res.json(), url);
      return true;
    } catch (err) {
      // Try again in 30 s rather than after a whole TTL.
      this.remoteFetchedAt = Date.now() - ttl + 30_000;
      this.options.logger?.warn({ jwks: url, err: (err as Error).message }, 'cannot fetch JWKS; keeping the keys fetched before');
      return false;
    }
  }
}
