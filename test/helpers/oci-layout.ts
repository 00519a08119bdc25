import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { fileDigest, sha256 } from './digest.js';

/**
 * OCI image layouts (image-spec `image-layout.md`) for end-to-end tests with skopeo's `oci:` transport:
 * an `oci-layout` file, `index.json`, and content-addressed blobs under `blobs/sha256/<hex>`.
 */

/** OCI media types used by the generated layouts. */
export const OciMediaTypes = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layerTar: 'application/vnd.oci.image.layer.v1.tar',
  layerTarGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

/** The annotation that names a tag in a layout's `index.json`. */
export const REF_NAME = 'org.opencontainers.image.ref.name';

/** An OCI platform. */
export interface Platform {
  os: string;
  architecture: string;
}

/** What to generate. */
export interface ImageLayoutOptions {
  /** Sizes of the layers (uncompressed), in bytes; every layer is fresh random (incompressible) data. */
  layers: number[];
  /** With platforms, one image per platform (each with its own random layers) under one OCI image index. */
  platforms?: Platform[];
  /** The tag (`org.opencontainers.image.ref.name`) the layout's `index.json` gives the image or index. */
  tag: string;
  /** Gzip the layers (real gzip of the random data, media type `...tar+gzip`); default: uncompressed `...tar`. */
  gzip?: boolean;
}

/** A content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

/** The digests of one generated image. */
export interface GeneratedImage {
  /** Digest of the image manifest. */
  manifest: string;
  /** Digest of the image config. */
  config: string;
  /** Digests of the layer blobs, in manifest order. */
  layers: string[];
  platform?: Platform;
}

/** The result of {@link makeImageLayout}. */
export interface GeneratedLayout {
  tag: string;
  /** The digest the tag points at: the index for a multi-platform image, else the manifest. */
  digest: string;
  /** The media type of the tagged object. */
  mediaType: string;
  /** The image index digest (multi-platform only). */
  index?: string;
  /** One entry per image (per platform when platforms were given). */
  images: GeneratedImage[];
  /** Every blob written for this tag (layers, configs, manifests, index). */
  blobs: string[];
}

interface LayoutIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
}

/** Path of a blob in a layout. */
export function blobPath(dir: string, digest: string): string {
  const [algorithm, hex] = digest.split(':');
  if (!algorithm || !hex) throw new Error(`not a digest: ${digest}`);
  return join(dir, 'blobs', algorithm, hex);
}

async function writeJsonBlob(dir: string, value: unknown): Promise<Descriptor & { bytes: Buffer }> {
  const bytes = Buffer.from(JSON.stringify(value));
  const digest = sha256(bytes);
  await writeFile(blobPath(dir, digest), bytes);
  return { mediaType: '', digest, size: bytes.length, bytes };
}

/** `size` random bytes, produced 1 MiB at a time on demand. */
function randomStream(size: number): Readable {
  let left = size;
  return new Readable({
    read() {
      if (left <= 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, 1 << 20);
      left -= n;
      this.push(randomBytes(n));
    },
  });
}

/** A pass-through that hashes what flows through it. */
function hashing(): { stream: Transform; result(): { digest: string; size: number } } {
  const hash = createHash('sha256');
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      size += chunk.length;
      done(null, chunk);
    },
  });
  return { stream, result: () => ({ digest: `sha256:${hash.digest('hex')}`, size }) };
}

/** Writes one random layer; returns its descriptor and diff id (digest of the uncompressed bytes). */
async function writeLayer(dir: string, size: number, gzip: boolean): Promise<{ descriptor: Descriptor; diffId: string }> {
  const tmp = join(dir, 'blobs', `.tmp-${randomBytes(8).toString('hex')}`);
  const raw = hashing();
  const stored = hashing();
  if (gzip) await pipeline(randomStream(size), raw.stream, createGzip(), stored.stream, createWriteStream(tmp));
  else await pipeline(randomStream(size), raw.stream, createWriteStream(tmp));
  const diff = raw.result();
  const blob = gzip ? stored.result() : diff;
  await rename(tmp, blobPath(dir, blob.digest));
  return {
    descriptor: { mediaType: gzip ? OciMediaTypes.layerTarGzip : OciMediaTypes.layerTar, digest: blob.digest, size: blob.size },
    diffId: diff.digest,
  };
}

async function writeImage(
  dir: string,
  sizes: number[],
  platform: Platform,
  gzip: boolean,
): Promise<{ image: GeneratedImage; descriptor: Descriptor }> {
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const size of sizes) {
    const { descriptor, diffId } = await writeLayer(dir, size, gzip);
    layers.push(descriptor);
    diffIds.push(diffId);
  }
  const config = await writeJsonBlob(dir, {
    created: new Date().toISOString(),
    architecture: platform.architecture,
    os: platform.os,
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map(() => ({ created_by: 'berth e2e test' })),
  });
  const manifest = await writeJsonBlob(dir, {
    schemaVersion: 2,
    mediaType: OciMediaTypes.manifest,
    config: { mediaType: OciMediaTypes.config, digest: config.digest, size: config.size },
    layers,
  });
  return {
    image: { manifest: manifest.digest, config: config.digest, layers: layers.map((l) => l.digest), platform },
    descriptor: { mediaType: OciMediaTypes.manifest, digest: manifest.digest, size: manifest.size },
  };
}

/** Reads a layout's `index.json`, or an empty index when there is none. */
export async function readLayoutIndex(dir: string): Promise<LayoutIndex> {
  try {
    return JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as LayoutIndex;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { schemaVersion: 2, manifests: [] };
    throw err;
  }
}

/** The digest a layout's `index.json` gives `tag`, or undefined. */
export async function layoutTagDigest(dir: string, tag: string): Promise<string | undefined> {
  const index = await readLayoutIndex(dir);
  return index.manifests.find((m) => m.annotations?.[REF_NAME] === tag)?.digest;
}

/**
 * Writes an image (or, with `platforms`, one image per platform under an OCI image index) into the OCI image layout
 * at `dir` (created if missing; an existing layout keeps its other tags, and a same-named tag is replaced), tagged
 * `tag`. Layers are fresh random bytes, so every call yields digests no registry has seen before.
 */
export async function makeImageLayout(dir: string, options: ImageLayoutOptions): Promise<GeneratedLayout> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const gzip = options.gzip ?? false;
  const images: GeneratedImage[] = [];
  let top: Descriptor;
  let indexDigest: string | undefined;
  if (options.platforms && options.platforms.length > 0) {
    const entries: Descriptor[] = [];
    for (const platform of options.platforms) {
      const { image, descriptor } = await writeImage(dir, options.layers, platform, gzip);
      images.push(image);
      entries.push({ ...descriptor, platform });
    }
    const index = await writeJsonBlob(dir, { schemaVersion: 2, mediaType: OciMediaTypes.index, manifests: entries });
    indexDigest = index.digest;
    top = { mediaType: OciMediaTypes.index, digest: index.digest, size: index.size };
  } else {
    const { image, descriptor } = await writeImage(dir, options.layers, { os: 'linux', architecture: 'amd64' }, gzip);
    images.push(image);
    top = descriptor;
  }
  const layoutIndex = await readLayoutIndex(dir);
  layoutIndex.manifests = layoutIndex.manifests.filter((m) => m.annotations?.[REF_NAME] !== options.tag);
  layoutIndex.manifests.push({ ...top, annotations: { [REF_NAME]: options.tag } });
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: layoutIndex.manifests }));
  const blobs = images.flatMap((i) => [...i.layers, i.config, i.manifest]);
  if (indexDigest) blobs.push(indexDigest);
  return {
    tag: options.tag,
    digest: top.digest,
    mediaType: top.mediaType,
    ...(indexDigest ? { index: indexDigest } : {}),
    images,
    blobs,
  };
}

/** One blob reached from a root digest, with the digest its bytes actually have. */
export interface WalkedBlob {
  digest: string;
  /** sha256 of the stored bytes (equal to `digest` when the blob is intact). */
  actual: string;
  size: number;
  mediaType: string;
}

const MANIFEST_TYPES = new Set<string>([
  OciMediaTypes.manifest,
  OciMediaTypes.index,
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);

/**
 * Everything reachable from `digest` in a layout (or a `dir:`-style directory via `pathOf`): the manifest or index
 * itself, child manifests, configs and layers, each re-hashed from disk. Missing blobs make it throw.
 */
export async function walkBlobs(
  dir: string,
  digest: string,
  mediaType: string,
  pathOf: (dir: string, digest: string) => string = blobPath,
): Promise<WalkedBlob[]> {
  const out = new Map<string, WalkedBlob>();
  const visit = async (d: string, type: string): Promise<void> => {
    if (out.has(d)) return;
    const path = pathOf(dir, d);
    const { size } = await stat(path);
    out.set(d, { digest: d, actual: await fileDigest(path), size, mediaType: type });
    if (!MANIFEST_TYPES.has(type)) return;
    const doc = JSON.parse(await readFile(path, 'utf8')) as { config?: Descriptor; layers?: Descriptor[]; manifests?: Descriptor[] };
    for (const child of doc.manifests ?? []) await visit(child.digest, child.mediaType);
    if (doc.config) await visit(doc.config.digest, doc.config.mediaType);
    for (const layer of doc.layers ?? []) await visit(layer.digest, layer.mediaType);
  };
  await visit(digest, mediaType);
  return [...out.values()].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
}
