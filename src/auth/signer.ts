import { createPrivateKey, createPublicKey, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SignJWT, type JWTPayload } from 'jose';
import type { Logger } from 'pino';
import { ConfigError } from '../config/fields.js';
import { isNotFound, type StorageDriver } from '../storage/driver.js';
import { libtrustKeyId, selfSignedCertificate } from './x509.js';

/** Where a generated signing key and its certificate are kept, relative to the storage root (works on S3 too). */
export const KEY_PATH = '/berth/token-key.pem';
export const CERT_PATH = '/berth/token-cert.pem';

/**
 * berth's token signing key. Tokens carry `kid` = the libtrust key id and `x5c` = the certificate, which is how
 * Distribution 2.x finds the key (it checks `x5c` against `auth.token.rootcertbundle`, or looks `kid` up among the
 * bundle's keys), so a registry:2 configured with berth's certificate accepts berth's tokens.
 */
export class TokenSigner {
  readonly kid: string;
  readonly certificate: X509Certificate;

  constructor(
    readonly alg: string,
    private readonly privateKey: KeyObject,
    readonly publicKey: KeyObject,
    readonly certificatePem: string,
  ) {
    this.kid = libtrustKeyId(publicKey);
    this.certificate = new X509Certificate(certificatePem);
  }

  /** Signs a JWT with the protected header {typ, alg, kid, x5c}. */
  async sign(payload: JWTPayload): Promise<string> {
    return new SignJWT(payload)
      .setProtectedHeader({ typ: 'JWT', alg: this.alg, kid: this.kid, x5c: [this.certificate.raw.toString('base64')] })
      .sign(this.privateKey);
  }

  /** The public key as a JWKS entry. */
  jwk(): Record<string, unknown> {
    const jwk = this.publicKey.export({ format: 'jwk' }) as Record<string, unknown>;
    return { ...jwk, kid: this.kid, alg: this.alg, use: 'sig', x5c: [this.certificate.raw.toString('base64')] };
  }
}

/** The JWS algorithm for a private key: ES256/ES384/ES512 by curve, RS256 for RSA, EdDSA for Ed25519. */
export function algorithmFor(key: KeyObject): string {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return 'ES256';
    if (curve === 'secp384r1') return 'ES384';
    if (curve === 'secp521r1') return 'ES512';
  }
  if (type === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048) return 'RS256';
  if (type === 'ed25519') return 'EdDSA';
  throw new Error(`unsupported signing key (${String(type)}); use EC P-256 (ES256) or RSA >= 2048 bits (RS256)`);
}

function samePublicKey(a: KeyObject, b: KeyObject): boolean {
  return a.export({ type: 'spki', format: 'der' }).equals(b.export({ type: 'spki', format: 'der' }));
}

export interface SignerOptions {
  /** `auth.builtin.key`: PEM private key file. */
  keyFile?: string;
  /** `auth.builtin.certificate`: PEM certificate for that key. */
  certificateFile?: string;
  driver: StorageDriver;
  /** Host directory of a filesystem driver's root, to restrict the generated key file to mode 0600. */
  storageRoot?: string;
  logger?: Logger;
}

async function getOptional(driver: StorageDriver, path: string): Promise<Buffer | undefined> {
  try {
    return await driver.getContent(path);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** Writes a secret through the driver; on a filesystem root the directory becomes 0700 and the file 0600. */
async function putSecret(options: SignerOptions, path: string, content: Buffer): Promise<void> {
  // Only a filesystem driver's files live under storageRoot (S3 keeps them in the bucket).
  const dir = options.storageRoot && options.driver.name === 'filesystem' ? join(options.storageRoot, 'berth') : undefined;
  if (dir) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
  }
  await options.driver.putContent(path, content);
  if (dir) await chmod(join(options.storageRoot as string, path), 0o600);
}

/**
 * The signing key: the configured one, or the one kept under the storage root, generated (EC P-256) on first start.
 * Its certificate: the configured one, or a self-signed one kept next to the key (regenerated when it does not match
 * the key or has expired).
 */
export async function loadSigner(options: SignerOptions): Promise<TokenSigner> {
  let privateKey: KeyObject;
  if (options.keyFile) {
    try {
      privateKey = createPrivateKey(await readFile(options.keyFile));
    } catch (err) {
      throw new ConfigError(`auth.builtin.key: cannot load ${options.keyFile}: ${(err as Error).message}`);
    }
  } else {
    const stored = await getOptional(options.driver, KEY_PATH);
    if (stored) {
      privateKey = createPrivateKey(stored);
    } else {
      const generated = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
      await putSecret(options, KEY_PATH, Buffer.from(generated.export({ type: 'pkcs8', format: 'pem' })));
      // Another replica sharing the storage may have written at the same time: use what the storage holds.
      privateKey = createPrivateKey(await options.driver.getContent(KEY_PATH));
      options.logger?.info({ path: KEY_PATH }, 'generated the token signing key');
    }
  }
  let alg: string;
  try {
    alg = algorithmFor(privateKey);
  } catch (err) {
    throw new ConfigError(`auth.builtin.key: ${(err as Error).message}`);
  }
  const publicKey = createPublicKey(privateKey);

  if (options.certificateFile) {
    let pem: string;
    let cert: X509Certificate;
    try {
      pem = await readFile(options.certificateFile, 'utf8');
      cert = new X509Certificate(pem);
    } catch (err) {
      throw new ConfigError(`auth.builtin.certificate: cannot load ${options.certificateFile}: ${(err as Error).message}`);
    }
    if (!samePublicKey(cert.publicKey, publicKey)) throw new ConfigError('auth.builtin.certificate: does not match auth.builtin.key');
    return new TokenSigner(alg, privateKey, publicKey, pem);
  }
  const storedCert = await getOptional(options.driver, CERT_PATH);
  if (storedCert) {
    try {
      const cert = new X509Certificate(storedCert);
      const validUntil = Date.parse(cert.validTo);
      if (samePublicKey(cert.publicKey, publicKey) && validUntil > Date.now() + 86_400_000) {
        return new TokenSigner(alg, privateKey, publicKey, storedCert.toString('utf8'));
      }
    } catch {
      // unreadable: replaced below
    }
  }
  const pem = selfSignedCertificate(privateKey, publicKey, { commonName: 'berth token signer' });
  await options.driver.putContent(CERT_PATH, Buffer.from(pem));
  const cert = (await options.driver.getContent(CERT_PATH)).toString('utf8');
  options.logger?.info({ path: CERT_PATH }, 'generated the token signing certificate');
  return new TokenSigner(alg, privateKey, publicKey, samePublicKey(new X509Certificate(cert).publicKey, publicKey) ? cert : pem);
}
