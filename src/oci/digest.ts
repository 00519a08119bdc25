import { createHash, type Hash } from 'node:crypto';
import { registryError } from '../errors/registry-error.js';

/**
 * Content digests: `algorithm ":" encoded`.
 *
 * The spec's grammar is `digest ::= algorithm ":" encoded` with `algorithm ::= [a-z0-9]+([+._-][a-z0-9]+)*` and
 * `encoded ::= [a-zA-Z0-9=_-]+`; a registry may refuse algorithms it does not implement. berth implements the two
 * registered ones, sha256 (64 lowercase hex) and sha512 (128 lowercase hex), and refuses everything else before it
 * touches a storage path.
 */
export type DigestAlgorithm = 'sha256' | 'sha512';

export interface Digest {
  readonly algorithm: DigestAlgorithm;
  readonly hex: string;
  /** `algorithm:hex` */
  readonly value: string;
}

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
const DIGEST_SHAPE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** Parses a digest, returning null when it is not one berth accepts. */
export function tryParseDigest(input: string): Digest | null {
  if (input.length > 256 || !DIGEST_SHAPE.test(input)) return null;
  const colon = input.indexOf(':');
  const algorithm = input.slice(0, colon);
  const hex = input.slice(colon + 1);
  if (algorithm !== 'sha256' && algorithm !== 'sha512') return null;
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[0-9a-f]+$/.test(hex)) return null;
  return { algorithm, hex, value: input };
}

/** Parses a digest or throws DIGEST_INVALID. */
export function parseDigest(input: string): Digest {
  const d = tryParseDigest(input);
  if (!d) throw registryError('DIGEST_INVALID', { digest: input }, { message: 'invalid or unsupported digest' });
  return d;
}

export function isDigest(input: string): boolean {
  return tryParseDigest(input) !== null;
}

export function newHash(algorithm: DigestAlgorithm): Hash {
  return createHash(algorithm);
}

export function digestOf(data: Buffer | string, algorithm: DigestAlgorithm = 'sha256'): Digest {
  const hex = createHash(algorithm).update(data).digest('hex');
  return { algorithm, hex, value: `${algorithm}:${hex}` };
}

export function digestFromHash(algorithm: DigestAlgorithm, hash: Hash): Digest {
  const hex = hash.digest('hex');
  return { algorithm, hex, value: `${algorithm}:${hex}` };
}
