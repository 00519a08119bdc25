import t from 'tap';
import { isDigest, parseDigest, tryParseDigest } from '../../src/oci/digest.js';
import { assertName, isValidName, isValidTag, MAX_NAME_LENGTH, parseReference } from '../../src/oci/reference.js';
import { label, outcome } from '../helpers/table.js';

const HEX64 = 'a'.repeat(62) + '0f';
const HEX128 = '0123456789abcdef'.repeat(8);

/** Repository names against the distribution-spec grammar (and Distribution's 255-character limit). */
const names: Array<[name: string, valid: boolean]> = [
  ['a', true],
  ['library/ubuntu', true],
  ['a/b/c/d/e', true],
  ['a0/9z', true],
  ['a.b', true],
  ['a_b', true],
  ['a__b', true],
  ['a-b', true],
  ['a---b', true],
  ['a.b_c__d--e', true],
  ['x'.repeat(MAX_NAME_LENGTH), true],
  ['x'.repeat(MAX_NAME_LENGTH + 1), false],
  [`${'x'.repeat(127)}/${'y'.repeat(127)}`, true],
  ['', false],
  ['A', false],
  ['Library/ubuntu', false],
  ['a___b', false],
  ['a..b', false],
  ['a._b', false],
  ['-a', false],
  ['a-', false],
  ['.a', false],
  ['a.', false],
  ['_a', false],
  ['/a', false],
  ['a/', false],
  ['a//b', false],
  ['.', false],
  ['..', false],
  ['a/../b', false],
  ['a/./b', false],
  ['../etc', false],
  ['a%2fb', false],
  ['a%2F..%2Fb', false],
  ['a b', false],
  ['a\n', false],
  ['\na', false],
  ['a\0b', false],
  ['a\\b', false],
  ['a:b', false],
  ['a@b', false],
  ['é', false],
  ['ａ', false], // fullwidth a
];

t.test('isValidName and assertName', async (t) => {
  for (const [name, valid] of names) {
    t.equal(isValidName(name), valid, label(name));
    t.same(
      outcome(() => assertName(name)),
      valid ? { value: name } : { code: 'NAME_INVALID' },
      `assertName ${label(name)}`,
    );
  }
});

/** Tags: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. */
const tags: Array<[tag: string, valid: boolean]> = [
  ['latest', true],
  ['v1.0.0', true],
  ['1.36-musl', true],
  ['_x', true],
  ['X_Y.z-1', true],
  ['a', true],
  ['a'.repeat(128), true],
  ['a'.repeat(129), false],
  ['', false],
  ['.x', false],
  ['-x', false],
  ['a:b', false],
  ['a/b', false],
  ['a+b', false],
  ['a b', false],
  ['a\n', false],
  ['..', false],
  ['ümlaut', false],
];

t.test('isValidTag', async (t) => {
  for (const [tag, valid] of tags) t.equal(isValidTag(tag), valid, label(tag));
});

/** Digests: sha256 (64 lowercase hex) and sha512 (128 lowercase hex); everything else is refused. */
const digests: Array<[input: string, valid: boolean]> = [
  [`sha256:${HEX64}`, true],
  [`sha512:${HEX128}`, true],
  [`sha256:${HEX64.toUpperCase()}`, false],
  [`SHA256:${HEX64}`, false],
  [`sha256:${HEX64.slice(1)}`, false],
  [`sha256:${HEX64}0`, false],
  [`sha256:${HEX128}`, false],
  [`sha512:${HEX64}`, false],
  [`sha384:${'a'.repeat(96)}`, false],
  [`md5:${'a'.repeat(32)}`, false],
  [`sha256+b64:${HEX64}`, false],
  [`sha256:${'g'.repeat(64)}`, false],
  [`sha256:${HEX64}\n`, false],
  [` sha256:${HEX64}`, false],
  [`sha256::${HEX64}`, false],
  [`sha256:${HEX64}:`, false],
  [`sha256:${HEX64.slice(0, 32)}/${HEX64.slice(33)}`, false],
  ['sha256:', false],
  [`:${HEX64}`, false],
  [HEX64, false],
  ['', false],
  [`sha256:${'a'.repeat(300)}`, false],
  [`sha256:../../${HEX64.slice(6)}`, false],
];

t.test('tryParseDigest, parseDigest and isDigest', async (t) => {
  for (const [input, valid] of digests) {
    const parsed = tryParseDigest(input);
    t.equal(isDigest(input), valid, label(input));
    if (valid) {
      const [algorithm, hex] = input.split(':');
      t.same(parsed, { algorithm, hex, value: input }, `parts of ${label(input)}`);
      t.same(
        outcome(() => parseDigest(input).value),
        { value: input },
        `parseDigest ${label(input)}`,
      );
    } else {
      t.equal(parsed, null, `tryParseDigest ${label(input)}`);
      t.same(
        outcome(() => parseDigest(input)),
        { code: 'DIGEST_INVALID' },
        `parseDigest ${label(input)}`,
      );
    }
  }
});

/** A manifest reference is a digest when it holds a colon, else a tag. */
const references: Array<[ref: string, expected: { tag: string } | { digest: string } | { code: string }]> = [
  ['latest', { tag: 'latest' }],
  ['v1.2.3', { tag: 'v1.2.3' }],
  [`sha256:${HEX64}`, { digest: `sha256:${HEX64}` }],
  [`sha512:${HEX128}`, { digest: `sha512:${HEX128}` }],
  ['sha256:abc', { code: 'DIGEST_INVALID' }],
  ['a:b', { code: 'DIGEST_INVALID' }],
  [':', { code: 'DIGEST_INVALID' }],
  [`latest:${HEX64}`, { code: 'DIGEST_INVALID' }],
  ['', { code: 'TAG_INVALID' }],
  ['bad tag', { code: 'TAG_INVALID' }],
  ['.hidden', { code: 'TAG_INVALID' }],
  ['t'.repeat(129), { code: 'TAG_INVALID' }],
  ['../../etc', { code: 'TAG_INVALID' }],
];

t.test('parseReference', async (t) => {
  for (const [ref, expected] of references) {
    const got = outcome(() => parseReference(ref));
    const simple = 'code' in got ? got : got.value.kind === 'tag' ? { tag: got.value.tag } : { digest: got.value.digest.value };
    t.same(simple, expected, label(ref));
  }
});
