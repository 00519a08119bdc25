import { registryError } from '../errors/registry-error.js';
import { tryParseDigest, type Digest } from './digest.js';

/**
 * Repository names and tags, checked against the distribution-spec grammar before anything builds a path.
 *
 * Spec: `<name>` MUST match `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
 * Spec: `<reference>` as a tag MUST be at most 128 characters and match `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
 * Distribution also limits a whole name to 255 characters; so do we.
 */
const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
export const MAX_NAME_LENGTH = 255;

export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

/** Throws NAME_INVALID unless `name` is a repository name. */
export function assertName(name: string): string {
  if (!isValidName(name)) throw registryError('NAME_INVALID', { name: name.slice(0, 300) });
  return name;
}

export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

/** A manifest reference: a digest when it contains a colon, a tag otherwise. */
export function parseReference(ref: string): Reference {
  if (ref.includes(':')) {
    const digest = tryParseDigest(ref);
    if (!digest) throw registryError('DIGEST_INVALID', { reference: ref.slice(0, 300) }, { message: 'invalid or unsupported digest' });
    return { kind: 'digest', digest };
  }
  if (!isValidTag(ref)) throw registryError('TAG_INVALID', { tag: ref.slice(0, 300) }, { message: 'invalid tag' });
  return { kind: 'tag', tag: ref };
}
