import { createHash, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';

/**
 * Just enough DER to write a self-signed X.509 v3 certificate for the token signing key, so Distribution's
 * `auth.token.rootcertbundle` can trust berth's tokens (RFC 5280 §4.1), and the libtrust key id Distribution uses
 * as a token `kid`.
 */

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** A DER tag-length-value. */
export function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const seq = (...items: Buffer[]): Buffer => tlv(0x30, ...items);
const set = (...items: Buffer[]): Buffer => tlv(0x31, ...items);

/** A non-negative INTEGER from big-endian bytes (minimal encoding, sign byte when the high bit is set). */
function integer(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  let b = bytes.subarray(i);
  if (b.length === 0) b = Buffer.from([0]);
  if ((b[0] ?? 0) & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}

/** An OBJECT IDENTIFIER from dotted notation. */
export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const out: number[] = [40 * (arcs[0] ?? 0) + (arcs[1] ?? 0)];
  for (const arc of arcs.slice(2)) {
    const chunk: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

const bitString = (bytes: Buffer, unusedBits = 0): Buffer => tlv(0x03, Buffer.from([unusedBits]), bytes);
const octetString = (bytes: Buffer): Buffer => tlv(0x04, bytes);
const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'));
const TRUE = tlv(0x01, Buffer.from([0xff]));
const NULL = Buffer.from([0x05, 0x00]);

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050, always in seconds and `Z`. */
function time(d: Date): Buffer {
  const iso = d
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:T]/g, '');
  return d.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(iso.slice(2), 'ascii')) : tlv(0x18, Buffer.from(iso, 'ascii'));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), TRUE, octetString(value)) : seq(oid(id), octetString(value));
}

/** Signature algorithm (AlgorithmIdentifier DER) and hash for a signing key. */
function signatureAlgorithm(key: KeyObject): { identifier: Buffer; hash: string | null } {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return { identifier: seq(oid('1.2.840.10045.4.3.2')), hash: 'sha256' };
    if (curve === 'secp384r1') return { identifier: seq(oid('1.2.840.10045.4.3.3')), hash: 'sha384' };
    if (curve === 'secp521r1') return { identifier: seq(oid('1.2.840.10045.4.3.4')), hash: 'sha512' };
    throw new Error(`unsupported EC curve ${String(curve)}`);
  }
  if (type === 'rsa') return { identifier: seq(oid('1.2.840.113549.1.1.11'), NULL), hash: 'sha256' };
  if (type === 'ed25519') return { identifier: seq(oid('1.3.101.112')), hash: null };
  throw new Error(`unsupported key type ${String(type)}`);
}

/** The subjectPublicKey BIT STRING content inside a SubjectPublicKeyInfo (what the key identifier hashes). */
function subjectPublicKeyBits(spki: Buffer): Buffer {
  // SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING }
  const readHeader = (buf: Buffer, at: number): { tag: number; len: number; start: number } => {
    const tag = buf[at] ?? 0;
    let len = buf[at + 1] ?? 0;
    let start = at + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + (buf[start + i] ?? 0);
      start += n;
    }
    return { tag, len, start };
  };
  const outer = readHeader(spki, 0);
  const alg = readHeader(spki, outer.start);
  const bits = readHeader(spki, alg.start + alg.len);
  return spki.subarray(bits.start + 1, bits.start + bits.len);
}

export interface SelfSignedOptions {
  commonName: string;
  notBefore?: Date;
  notAfter?: Date;
}

/**
 * A self-signed CA certificate for `privateKey` (EC P-256/P-384/P-521, RSA or Ed25519), as PEM. It carries
 * basicConstraints CA:TRUE and keyUsage digitalSignature+keyCertSign, so it works both as the trusted leaf named in a
 * token's `x5c` and as a root in a certificate bundle.
 */
export function selfSignedCertificate(privateKey: KeyObject, publicKey: KeyObject, options: SelfSignedOptions): string {
  const now = Date.now();
  const notBefore = options.notBefore ?? new Date(now - 3_600_000);
  const notAfter = options.notAfter ?? new Date(now + 10 * 365 * 86_400_000);
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x40; // RFC 5280 §4.1.2.2: positive, at most 20 octets
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const name = seq(set(seq(oid('2.5.4.3'), utf8(options.commonName))));
  const keyId = createHash('sha1').update(subjectPublicKeyBits(spki)).digest();
  const { identifier, hash } = signatureAlgorithm(privateKey);
  const extensions = tlv(
    0xa3,
    seq(
      extension('2.5.29.19', true, seq(TRUE)), // basicConstraints: cA TRUE
      extension('2.5.29.15', true, bitString(Buffer.from([0x84]), 2)), // keyUsage: digitalSignature, keyCertSign
      extension('2.5.29.14', false, octetString(keyId)), // subjectKeyIdentifier
      extension('2.5.29.35', false, seq(tlv(0x80, keyId))), // authorityKeyIdentifier (self)
    ),
  );
  const tbs = seq(
    tlv(0xa0, integer(Buffer.from([2]))), // version v3
    integer(serial),
    identifier,
    name,
    seq(time(notBefore), time(notAfter)),
    name,
    spki,
    extensions,
  );
  const signature = sign(hash, tbs, privateKey);
  return toPem('CERTIFICATE', seq(tbs, identifier, bitString(signature)));
}

/** PEM armour with 64-character lines. */
export function toPem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/** Every CERTIFICATE block of a PEM bundle. Throws when a block is not a valid certificate. */
export function parseCertificateBundle(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b));
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(bytes: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/**
 * The libtrust key id Distribution 2.x matches a token's `kid` against: SHA-256 of the PKIX public key DER,
 * first 240 bits, base32, in twelve `:`-separated groups of four (`ABCD:EFGH:...`).
 */
export function libtrustKeyId(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  const encoded = base32(createHash('sha256').update(der).digest().subarray(0, 30));
  return encoded.match(/.{4}/g)?.join(':') ?? encoded;
}
