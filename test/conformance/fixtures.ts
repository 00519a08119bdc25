import { randomBytes, randomInt } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { sha256 } from '../helpers/digest.js';

/**
 * The content the conformance suite pushes, generated fresh for every run the way the suite's setup does it:
 * one image config per workflow made unique by a random `author`, one small tar.gz layer, image manifests that
 * carry an embedded `data` field and an unknown field (the registry must store and serve them untouched), blobs
 * of random bytes for the streamed and chunked uploads, the empty JSON blob, and artifact manifests plus an index
 * whose `subject` points at an image manifest (for the referrers API).
 */

/** Media types the conformance content uses. */
export const MediaType = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  empty: 'application/vnd.oci.empty.v1+json',
} as const;

/** Bytes with their length and sha256 digest. */
export interface TestBlob {
  content: Buffer;
  length: number;
  digest: string;
}

/** A blob split in two chunks for the chunked-upload checks (`Content-Range` values are inclusive). */
export interface ChunkedBlob extends TestBlob {
  chunk1: Buffer;
  chunk2: Buffer;
  chunk1Range: string;
  chunk2Range: string;
}

/** Bytes with their length and digest. */
export function blobOf(content: Buffer | string): TestBlob {
  const b = typeof content === 'string' ? Buffer.from(content) : content;
  return { content: b, length: b.length, digest: sha256(b) };
}

/** `n` characters from the alphabet the suite draws its random config authors from. */
export function randomString(n: number): string {
  const letters = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-';
  let out = '';
  for (let i = 0; i < n; i++) out += letters[randomInt(letters.length)];
  return out;
}

/** A random blob of `size` bytes cut after `size/2 + 1` bytes, as the suite's chunked blob is. */
export function chunkedBlob(size: number): ChunkedBlob {
  const content = randomBytes(size);
  const cut = Math.floor(size / 2) + 1;
  const chunk1 = content.subarray(0, cut);
  const chunk2 = content.subarray(cut);
  return {
    ...blobOf(content),
    chunk1,
    chunk2,
    chunk1Range: `0-${chunk1.length - 1}`,
    chunk2Range: `${chunk1.length}-${content.length - 1}`,
  };
}

/** A gzip-compressed POSIX tar archive holding one regular file. */
export function tarGz(fileName: string, data: Buffer): Buffer {
  const header = Buffer.alloc(512);
  const octal = (value: number, width: number) => `${value.toString(8).padStart(width - 1, '0')}\0`;
  header.write(fileName, 0, 100, 'utf8');
  header.write(octal(0o644, 8), 100);
  header.write(octal(0, 8), 108);
  header.write(octal(0, 8), 116);
  header.write(octal(data.length, 12), 124);
  header.write(octal(Math.floor(Date.UTC(2024, 0, 1) / 1000), 12), 136);
  header.fill(' ', 148, 156);
  header.write('0', 156);
  header.write('ustar\0', 257);
  header.write('00', 263);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  const padding = Buffer.alloc((512 - (data.length % 512)) % 512);
  return gzipSync(Buffer.concat([header, data, padding, Buffer.alloc(1024)]));
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A descriptor with the suite's extra `newUnspecifiedField` (serialised as null unless given). */
function descriptor(mediaType: string, blob: TestBlob, extra: { [key: string]: Json } = {}): { [key: string]: Json } {
  return { mediaType, digest: blob.digest, size: blob.length, ...extra, newUnspecifiedField: extra.newUnspecifiedField ?? null };
}

/** Tab-indented JSON, the shape the suite's marshalled manifests have. */
function encode(value: Json): TestBlob {
  return blobOf(JSON.stringify(value, null, '\t'));
}

/** Everything one conformance run pushes. Index numbers follow the suite: 0 pull, 1 push, 2 discovery, 3 management, 4 referrers. */
export interface Fixtures {
  configs: TestBlob[];
  manifests: TestBlob[];
  layer: TestBlob;
  emptyLayerManifest: TestBlob;
  blobA: TestBlob;
  blobB: ChunkedBlob;
  emptyJSON: TestBlob;
  refBlobA: TestBlob;
  refBlobB: TestBlob;
  artifactTypeA: string;
  artifactTypeB: string;
  artifactTypeIndex: string;
  annotationKey: string;
  /** Referrer digest → the annotation value it carries under `annotationKey`. */
  annotationValues: Map<string, string>;
  refsManifestAConfig: TestBlob;
  refsManifestBConfig: TestBlob;
  refsManifestALayer: TestBlob;
  refsManifestBLayer: TestBlob;
  refsManifestCLayer: TestBlob;
  refsIndex: TestBlob;
  /** sha256 of "hello world": a digest nothing in the run uploads. */
  dummyDigest: string;
  nonexistentManifest: string;
  invalidManifestContent: Buffer;
}

/** The number of configs/manifests generated (the suite makes one per workflow bit; these five are used). */
const WORKFLOW_CONTENT = 5;

/** Generates one run's content (random where the suite is random, so runs never collide). */
export function makeFixtures(): Fixtures {
  const configs: TestBlob[] = [];
  for (let i = 0; i < WORKFLOW_CONTENT; i++) {
    configs.push(encode({ author: randomString(16), architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  }
  const layer = blobOf(tarGz('conformance.txt', Buffer.from(`berth conformance layer ${randomString(8)}\n`)));
  const layers = [descriptor(MediaType.layerGzip, layer)];
  const configDescriptor = (c: TestBlob) =>
    descriptor(MediaType.config, c, {
      // must be the config content; the unknown field's content does not matter
      data: c.content.toString('base64'),
      newUnspecifiedField: Buffer.from('hello world').toString('base64'),
    });
  const manifests = configs.map((c) => encode({ schemaVersion: 2, mediaType: MediaType.manifest, config: configDescriptor(c), layers }));
  // No mediaType field, no layers: the registry must work the type out from the Content-Type / body.
  const emptyLayerManifest = encode({ schemaVersion: 2, config: configDescriptor(configs[1] as TestBlob), layers: [] });

  const emptyJSON = blobOf('{}');
  const emptyJSONDescriptor = descriptor(MediaType.empty, emptyJSON);
  const refBlobA = blobOf(`berth referrer blob A ${randomString(8)}`);
  const refBlobB = blobOf(`berth referrer blob B ${randomString(8)}`);
  const artifactTypeA = 'application/vnd.berth.conformance.artifact-a';
  const artifactTypeB = 'application/vnd.berth.conformance.artifact-b';
  const artifactTypeIndex = 'application/vnd.berth.conformance.bundle';
  const annotationKey = 'org.opencontainers.conformance.test';
  const annotationValues = new Map<string, string>();
  const subject4 = descriptor(MediaType.manifest, manifests[4] as TestBlob);
  const subject3 = descriptor(MediaType.manifest, manifests[3] as TestBlob);

  const annotated = (value: { [key: string]: Json }, note: string): TestBlob => {
    const blob = encode({ ...value, annotations: { [annotationKey]: note } });
    annotationValues.set(blob.digest, note);
    return blob;
  };
  // artifact type given by config.mediaType
  const refsManifestAConfig = annotated(
    {
      schemaVersion: 2,
      mediaType: MediaType.manifest,
      config: descriptor(artifactTypeA, refBlobA),
      layers: [emptyJSONDescriptor],
      subject: subject4,
    },
    'test config a',
  );
  const refsManifestBConfig = annotated(
    {
      schemaVersion: 2,
      mediaType: MediaType.manifest,
      config: descriptor(artifactTypeB, refBlobB),
      layers: [emptyJSONDescriptor],
      subject: subject4,
    },
    'test config b',
  );
  // artifact type given by artifactType, config is the empty JSON
  const refsManifestALayer = annotated(
    {
      schemaVersion: 2,
      mediaType: MediaType.manifest,
      artifactType: artifactTypeA,
      config: emptyJSONDescriptor,
      layers: [descriptor(artifactTypeA, refBlobA)],
      subject: subject4,
    },
    'test layer a',
  );
  const refsManifestBLayer = annotated(
    {
      schemaVersion: 2,
      mediaType: MediaType.manifest,
      artifactType: artifactTypeB,
      config: emptyJSONDescriptor,
      layers: [descriptor(artifactTypeB, refBlobB)],
      subject: subject4,
    },
    'test layer b',
  );
  // like B, but its subject (manifests[3]) is not pushed when it is
  const refsManifestCLayer = encode({
    schemaVersion: 2,
    mediaType: MediaType.manifest,
    artifactType: artifactTypeB,
    config: emptyJSONDescriptor,
    layers: [descriptor(artifactTypeB, refBlobB)],
    subject: subject3,
  });
  const refsIndex = annotated(
    {
      schemaVersion: 2,
      mediaType: MediaType.index,
      artifactType: artifactTypeIndex,
      manifests: [descriptor(MediaType.manifest, refsManifestAConfig), descriptor(MediaType.manifest, refsManifestALayer)],
      subject: subject4,
    },
    'test index',
  );

  return {
    configs,
    manifests,
    layer,
    emptyLayerManifest,
    blobA: blobOf(randomBytes(42)),
    blobB: chunkedBlob(42),
    emptyJSON,
    refBlobA,
    refBlobB,
    artifactTypeA,
    artifactTypeB,
    artifactTypeIndex,
    annotationKey,
    annotationValues,
    refsManifestAConfig,
    refsManifestBConfig,
    refsManifestALayer,
    refsManifestBLayer,
    refsManifestCLayer,
    refsIndex,
    dummyDigest: sha256('hello world'),
    nonexistentManifest: '.INVALID_MANIFEST_NAME',
    invalidManifestContent: Buffer.from('blablabla'),
  };
}

/** An index referencing other manifests by descriptor (used by the push checks for indexes). */
export function indexOf(children: Array<{ mediaType: string; blob: TestBlob }>, artifactType: string, annotationKey: string): TestBlob {
  return encode({
    schemaVersion: 2,
    mediaType: MediaType.index,
    artifactType,
    manifests: children.map((c) => descriptor(c.mediaType, c.blob)),
    annotations: { [annotationKey]: 'test index' },
  });
}
