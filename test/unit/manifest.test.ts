import t from 'tap';
import { MAX_MANIFEST_BYTES, MediaTypes, parseManifest, referrerArtifactType } from '../../src/oci/manifest.js';
import { label, outcome } from '../helpers/table.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const config = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d('c'), size: 7 };
const layer = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('1'), size: 100 };
const child = { mediaType: MediaTypes.ociManifest, digest: d('2'), size: 500, platform: { os: 'linux', architecture: 'amd64' } };
const ociManifest = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config, layers: [layer] };
const ociIndex = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [child] };

/** What the tests compare: the parts of a parsed manifest the registry acts on, digests as strings. */
interface Summary {
  mediaType: string;
  isIndex: boolean;
  blobs: string[];
  children: string[];
  subject?: string;
  artifactType?: string;
  annotations?: Record<string, string>;
  referrerType?: string;
}

function summarise(body: unknown, contentType?: string): Summary | { code: string } {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  const got = outcome(() => parseManifest(bytes, contentType));
  if ('code' in got) return got;
  const m = got.value;
  const s: Summary = {
    mediaType: m.mediaType,
    isIndex: m.isIndex,
    blobs: m.blobs.map((b) => b.digest.value),
    children: m.children.map((c) => c.digest.value),
  };
  if (m.subject) s.subject = m.subject.digest.value;
  if (m.artifactType !== undefined) s.artifactType = m.artifactType;
  if (m.annotations) s.annotations = m.annotations;
  const referrerType = referrerArtifactType(m);
  if (referrerType !== undefined) s.referrerType = referrerType;
  return s;
}

const INVALID = { code: 'MANIFEST_INVALID' };
const image = (over: Record<string, unknown>) => ({ ...ociManifest, ...over });

const rows: Array<[name: string, body: unknown, contentType: string | undefined, expected: Summary | { code: string }]> = [
  [
    'OCI image manifest',
    ociManifest,
    MediaTypes.ociManifest,
    { mediaType: MediaTypes.ociManifest, isIndex: false, blobs: [d('c'), d('1')], children: [], referrerType: config.mediaType },
  ],
  [
    'Docker image manifest',
    image({ mediaType: MediaTypes.dockerManifest }),
    MediaTypes.dockerManifest,
    { mediaType: MediaTypes.dockerManifest, isIndex: false, blobs: [d('c'), d('1')], children: [], referrerType: config.mediaType },
  ],
  [
    'no layers',
    image({ layers: [] }),
    undefined,
    { mediaType: MediaTypes.ociManifest, isIndex: false, blobs: [d('c')], children: [], referrerType: config.mediaType },
  ],
  ['OCI index', ociIndex, MediaTypes.ociIndex, { mediaType: MediaTypes.ociIndex, isIndex: true, blobs: [], children: [d('2')] }],
  [
    'Docker manifest list',
    { ...ociIndex, mediaType: MediaTypes.dockerManifestList },
    undefined,
    { mediaType: MediaTypes.dockerManifestList, isIndex: true, blobs: [], children: [d('2')] },
  ],
  ['empty index', { ...ociIndex, manifests: [] }, undefined, { mediaType: MediaTypes.ociIndex, isIndex: true, blobs: [], children: [] }],
  // Spec: an OCI manifest or index may omit mediaType; a manifests array makes it an index.
  [
    'index without mediaType',
    { schemaVersion: 2, manifests: [child] },
    undefined,
    { mediaType: MediaTypes.ociIndex, isIndex: true, blobs: [], children: [d('2')] },
  ],
  [
    'manifest without mediaType',
    { schemaVersion: 2, config, layers: [layer] },
    undefined,
    { mediaType: MediaTypes.ociManifest, isIndex: false, blobs: [d('c'), d('1')], children: [], referrerType: config.mediaType },
  ],
  [
    'artifact with subject',
    image({ artifactType: 'application/vnd.example.sbom', subject: { mediaType: MediaTypes.ociManifest, digest: d('9'), size: 3 } }),
    undefined,
    {
      mediaType: MediaTypes.ociManifest,
      isIndex: false,
      blobs: [d('c'), d('1')],
      children: [],
      subject: d('9'),
      artifactType: 'application/vnd.example.sbom',
      referrerType: 'application/vnd.example.sbom',
    },
  ],
  [
    'index with subject and artifactType',
    { ...ociIndex, artifactType: 'application/vnd.example.set', subject: { mediaType: MediaTypes.ociManifest, digest: d('9'), size: 3 } },
    undefined,
    {
      mediaType: MediaTypes.ociIndex,
      isIndex: true,
      blobs: [],
      children: [d('2')],
      subject: d('9'),
      artifactType: 'application/vnd.example.set',
      referrerType: 'application/vnd.example.set',
    },
  ],
  [
    'annotations keep string values only',
    image({ annotations: { a: 'x', b: 1, c: null } }),
    undefined,
    {
      mediaType: MediaTypes.ociManifest,
      isIndex: false,
      blobs: [d('c'), d('1')],
      children: [],
      annotations: { a: 'x' },
      referrerType: config.mediaType,
    },
  ],
  [
    'foreign layer with urls',
    image({ layers: [{ ...layer, urls: ['https://example.com/l'] }] }),
    undefined,
    { mediaType: MediaTypes.ociManifest, isIndex: false, blobs: [d('c'), d('1')], children: [], referrerType: config.mediaType },
  ],
  [
    'unknown fields are ignored',
    image({ extra: { anything: [1, 2] } }),
    undefined,
    { mediaType: MediaTypes.ociManifest, isIndex: false, blobs: [d('c'), d('1')], children: [], referrerType: config.mediaType },
  ],
  // Content-Type against mediaType (spec: "MUST match ... when the mediaType field is set")
  [
    'Content-Type with parameters',
    ociManifest,
    `${MediaTypes.ociManifest}; charset=utf-8`,
    { mediaType: MediaTypes.ociManifest, isIndex: false, blobs: [d('c'), d('1')], children: [], referrerType: config.mediaType },
  ],
  [
    'Content-Type in upper case',
    ociManifest,
    MediaTypes.ociManifest.toUpperCase(),
    { mediaType: MediaTypes.ociManifest, isIndex: false, blobs: [d('c'), d('1')], children: [], referrerType: config.mediaType },
  ],
  [
    'Content-Type that is no manifest type',
    ociManifest,
    'application/octet-stream',
    { mediaType: MediaTypes.ociManifest, isIndex: false, blobs: [d('c'), d('1')], children: [], referrerType: config.mediaType },
  ],
  ['Content-Type of another manifest type', ociManifest, MediaTypes.ociIndex, INVALID],
  ['Content-Type Docker, mediaType OCI', ociManifest, MediaTypes.dockerManifest, INVALID],
  // refused
  ['empty body', '', undefined, INVALID],
  ['not JSON', 'not json', undefined, INVALID],
  ['truncated JSON', JSON.stringify(ociManifest).slice(0, -1), undefined, INVALID],
  ['JSON null', 'null', undefined, INVALID],
  ['JSON array', '[]', undefined, INVALID],
  ['JSON string', '"manifest"', undefined, INVALID],
  ['JSON number', '2', undefined, INVALID],
  ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), undefined, INVALID],
  ['schema 1', { schemaVersion: 1, name: 'a', tag: 'b', fsLayers: [] }, undefined, INVALID],
  ['schema 1 by mediaType', image({ mediaType: MediaTypes.dockerSchema1 }), undefined, INVALID],
  ['signed schema 1 by mediaType', image({ mediaType: MediaTypes.dockerSchema1Signed }), undefined, INVALID],
  ['schemaVersion 3', image({ schemaVersion: 3 }), undefined, INVALID],
  ['schemaVersion "2"', image({ schemaVersion: '2' }), undefined, INVALID],
  ['no schemaVersion', { mediaType: MediaTypes.ociManifest, config, layers: [layer] }, undefined, INVALID],
  ['unsupported mediaType', image({ mediaType: 'application/json' }), undefined, INVALID],
  ['config missing', { schemaVersion: 2, mediaType: MediaTypes.ociManifest, layers: [layer] }, undefined, INVALID],
  ['config not an object', image({ config: 'sha256:x' }), undefined, INVALID],
  ['layers missing', { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config }, undefined, INVALID],
  ['layers not an array', image({ layers: { 0: layer } }), undefined, INVALID],
  ['layer null', image({ layers: [null] }), undefined, INVALID],
  ['layer without mediaType', image({ layers: [{ digest: layer.digest, size: 1 }] }), undefined, INVALID],
  ['layer with empty mediaType', image({ layers: [{ ...layer, mediaType: '' }] }), undefined, INVALID],
  ['layer digest invalid', image({ layers: [{ ...layer, digest: 'sha256:1234' }] }), undefined, INVALID],
  ['layer digest of another algorithm', image({ layers: [{ ...layer, digest: `md5:${'a'.repeat(32)}` }] }), undefined, INVALID],
  ['layer digest a number', image({ layers: [{ ...layer, digest: 5 }] }), undefined, INVALID],
  ['layer size negative', image({ layers: [{ ...layer, size: -1 }] }), undefined, INVALID],
  ['layer size fractional', image({ layers: [{ ...layer, size: 1.5 }] }), undefined, INVALID],
  ['layer size a string', image({ layers: [{ ...layer, size: '100' }] }), undefined, INVALID],
  ['layer size past 2^53', image({ layers: [{ ...layer, size: 2 ** 53 }] }), undefined, INVALID],
  ['layer size missing', image({ layers: [{ mediaType: layer.mediaType, digest: layer.digest }] }), undefined, INVALID],
  ['index manifests not an array', { ...ociIndex, manifests: {} }, undefined, INVALID],
  ['index manifests missing', { schemaVersion: 2, mediaType: MediaTypes.ociIndex }, undefined, INVALID],
  ['index child digest invalid', { ...ociIndex, manifests: [{ ...child, digest: 'latest' }] }, undefined, INVALID],
  ['subject not a descriptor', image({ subject: 'sha256:x' }), undefined, INVALID],
  ['subject digest invalid', image({ subject: { mediaType: MediaTypes.ociManifest, digest: 'nope', size: 1 } }), undefined, INVALID],
];

t.test('parseManifest', async (t) => {
  for (const [name, body, contentType, expected] of rows) {
    t.same(summarise(body, contentType), expected, `${name} (Content-Type ${label(contentType)})`);
  }
});

t.test('the manifest size cap is registry:2 4 MiB', async (t) => {
  t.equal(MAX_MANIFEST_BYTES, 4 * 1024 * 1024);
});
