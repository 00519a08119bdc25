import { registryError } from '../errors/registry-error.js';
import { tryParseDigest, type Digest } from './digest.js';

/** Media types of the manifests berth stores and serves. */
export const MediaTypes = Object.freeze({
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
});

export const MANIFEST_MEDIA_TYPES: readonly string[] = [
  MediaTypes.dockerManifest,
  MediaTypes.dockerManifestList,
  MediaTypes.ociManifest,
  MediaTypes.ociIndex,
];

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  /** Foreign layers carry URLs and need not be present in the registry. */
  urls?: string[];
}

/** What the registry needs to know about a manifest: its kind, what it references and what it refers to. */
export interface ParsedManifest {
  mediaType: string;
  /** true for manifest lists and indexes: `children` are manifests. */
  isIndex: boolean;
  /** Blobs the manifest references (config and layers); empty for indexes. */
  blobs: Descriptor[];
  /** Manifests an index references. */
  children: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** The largest manifest berth accepts, serves from an upstream or reads in gc (registry:2's limit: 4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringMap(v: unknown): Record<string, string> | undefined {
  if (!isRecord(v)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) if (typeof val === 'string') out[k] = val;
  return out;
}

function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isRecord(v)) throw registryError('MANIFEST_INVALID', { reason: `${where} is not a descriptor` });
  const { mediaType, digest, size } = v;
  if (typeof mediaType !== 'string' || mediaType.length === 0) {
    throw registryError('MANIFEST_INVALID', { reason: `${where}.mediaType missing` });
  }
  const d = typeof digest === 'string' ? tryParseDigest(digest) : null;
  if (!d) throw registryError('MANIFEST_INVALID', { reason: `${where}.digest invalid` });
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw registryError('MANIFEST_INVALID', { reason: `${where}.size invalid` });
  }
  const out: Descriptor = { mediaType, digest: d, size };
  if (typeof v.artifactType === 'string') out.artifactType = v.artifactType;
  const annotations = stringMap(v.annotations);
  if (annotations) out.annotations = annotations;
  if (Array.isArray(v.urls)) out.urls = v.urls.filter((u): u is string => typeof u === 'string');
  return out;
}

/**
 * Works out a manifest's media type from its body. Spec: the `mediaType` field, when present, is authoritative; an
 * OCI manifest or index may omit it, in which case a `manifests` array makes it an index.
 */
export function detectMediaType(body: Record<string, unknown>): string {
  if (typeof body.mediaType === 'string' && body.mediaType.length > 0) return body.mediaType;
  if (body.schemaVersion === 1) return MediaTypes.dockerSchema1Signed;
  return Array.isArray(body.manifests) ? MediaTypes.ociIndex : MediaTypes.ociManifest;
}

/**
 * Parses and validates a manifest body.
 *
 * @param contentType the request's Content-Type, if any. Spec: "the mediaType field MUST match the Content-Type
 *   header when the mediaType field is set" -- a mismatch is MANIFEST_INVALID.
 */
export function parseManifest(bytes: Buffer, contentType?: string): ParsedManifest {
  let body: unknown;
  try {
    body = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw registryError('MANIFEST_INVALID', { reason: 'manifest is not valid JSON' });
  }
  if (!isRecord(body)) throw registryError('MANIFEST_INVALID', { reason: 'manifest is not a JSON object' });
  const mediaType = detectMediaType(body);
  const ct = contentType?.split(';')[0]?.trim().toLowerCase();
  if (typeof body.mediaType === 'string' && ct && MANIFEST_MEDIA_TYPES.includes(ct) && ct !== body.mediaType) {
    throw registryError('MANIFEST_INVALID', { reason: `Content-Type ${ct} does not match mediaType ${body.mediaType}` });
  }
  if (mediaType === MediaTypes.dockerSchema1 || mediaType === MediaTypes.dockerSchema1Signed) {
    throw registryError('MANIFEST_INVALID', { reason: 'Docker schema 1 manifests are not supported' });
  }
  if (!MANIFEST_MEDIA_TYPES.includes(mediaType)) {
    throw registryError('MANIFEST_INVALID', { reason: `unsupported manifest media type ${mediaType}` });
  }
  if (body.schemaVersion !== 2) throw registryError('MANIFEST_INVALID', { reason: 'schemaVersion must be 2' });

  const isIndex = mediaType === MediaTypes.ociIndex || mediaType === MediaTypes.dockerManifestList;
  const parsed: ParsedManifest = { mediaType, isIndex, blobs: [], children: [] };
  if (isIndex) {
    if (!Array.isArray(body.manifests)) throw registryError('MANIFEST_INVALID', { reason: 'manifests must be an array' });
    parsed.children = body.manifests.map((m, i) => parseDescriptor(m, `manifests[${i}]`));
  } else {
    parsed.blobs.push(parseDescriptor(body.config, 'config'));
    if (!Array.isArray(body.layers)) throw registryError('MANIFEST_INVALID', { reason: 'layers must be an array' });
    body.layers.forEach((l, i) => parsed.blobs.push(parseDescriptor(l, `layers[${i}]`)));
  }
  if (body.subject !== undefined) parsed.subject = parseDescriptor(body.subject, 'subject');
  if (typeof body.artifactType === 'string') parsed.artifactType = body.artifactType;
  const annotations = stringMap(body.annotations);
  if (annotations) parsed.annotations = annotations;
  return parsed;
}

/** Spec: a referrer's artifactType is its own artifactType, else its config's media type (manifests only). */
export function referrerArtifactType(m: ParsedManifest): string | undefined {
  if (m.artifactType) return m.artifactType;
  if (!m.isIndex) return m.blobs[0]?.mediaType;
  return undefined;
}
