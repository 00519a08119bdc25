import type { Digest } from '../oci/digest.js';

/**
 * Where everything lives: CNCF Distribution's (registry:2) layout, so either registry serves what the other wrote.
 *
 * ```
 * /docker/registry/v2/
 * ├── blobs/<alg>/<hex[0:2]>/<hex>/data                      blob and manifest bytes, content-addressed
 * └── repositories/<name>/
 *     ├── _layers/<alg>/<hex>/link                            "<alg>:<hex>": the blob is in this repository
 *     ├── _manifests/
 *     │   ├── revisions/<alg>/<hex>/link                      the manifest is in this repository
 *     │   └── tags/<tag>/
 *     │       ├── current/link                                digest the tag points at now
 *     │       └── index/<alg>/<hex>/link                      every digest the tag has pointed at
 *     ├── _referrers/subjects/<alg>/<hex>/<alg>/<rhex>/link   berth: manifest <rhex> has subject <hex>
 *     └── _uploads/<uuid>/
 *         ├── data                                            bytes received so far
 *         └── startedat                                       RFC 3339 start time (read by purging)
 * ```
 * registry:2 ignores `_referrers` (its catalog walk skips `_`-prefixed directories).
 *
 * What a repository is (the one rule, applied by `repositories.ts` for the catalog, gc, fsck, du and upload
 * purging): a folder under `repositories/`, reached without passing through a `_`-prefixed folder, that holds
 * `_manifests/`, `_layers/` or `_uploads/`. Its name is its path below `repositories/`. The catalog lists those
 * with content (`_manifests/` or `_layers/`), as registry:2 does; one that holds only `_uploads/` (a first push
 * in progress) is seen by gc and purging but not listed. A folder that only holds other repositories (`library`
 * of `library/app`) is not a repository.
 */
export const ROOT = '/docker/registry/v2';

export const paths = {
  blobsRoot: `${ROOT}/blobs`,
  repositoriesRoot: `${ROOT}/repositories`,
  blobDir: (d: Digest) => `${ROOT}/blobs/${d.algorithm}/${d.hex.slice(0, 2)}/${d.hex}`,
  blobData: (d: Digest) => `${ROOT}/blobs/${d.algorithm}/${d.hex.slice(0, 2)}/${d.hex}/data`,
  repository: (name: string) => `${ROOT}/repositories/${name}`,
  layersDir: (name: string) => `${ROOT}/repositories/${name}/_layers`,
  layerLink: (name: string, d: Digest) => `${ROOT}/repositories/${name}/_layers/${d.algorithm}/${d.hex}/link`,
  layerLinkDir: (name: string, d: Digest) => `${ROOT}/repositories/${name}/_layers/${d.algorithm}/${d.hex}`,
  manifestsDir: (name: string) => `${ROOT}/repositories/${name}/_manifests`,
  revisionsDir: (name: string) => `${ROOT}/repositories/${name}/_manifests/revisions`,
  revisionLink: (name: string, d: Digest) => `${ROOT}/repositories/${name}/_manifests/revisions/${d.algorithm}/${d.hex}/link`,
  revisionDir: (name: string, d: Digest) => `${ROOT}/repositories/${name}/_manifests/revisions/${d.algorithm}/${d.hex}`,
  tagsDir: (name: string) => `${ROOT}/repositories/${name}/_manifests/tags`,
  tagDir: (name: string, tag: string) => `${ROOT}/repositories/${name}/_manifests/tags/${tag}`,
  tagCurrentLink: (name: string, tag: string) => `${ROOT}/repositories/${name}/_manifests/tags/${tag}/current/link`,
  tagIndexLink: (name: string, tag: string, d: Digest) => `${ROOT}/repositories/${name}/_manifests/tags/${tag}/index/${d.algorithm}/${d.hex}/link`,
  referrersDir: (name: string, subject: Digest) => `${ROOT}/repositories/${name}/_referrers/subjects/${subject.algorithm}/${subject.hex}`,
  referrerDir: (name: string, subject: Digest, d: Digest) =>
    `${ROOT}/repositories/${name}/_referrers/subjects/${subject.algorithm}/${subject.hex}/${d.algorithm}/${d.hex}`,
  referrerLink: (name: string, subject: Digest, d: Digest) =>
    `${ROOT}/repositories/${name}/_referrers/subjects/${subject.algorithm}/${subject.hex}/${d.algorithm}/${d.hex}/link`,
  uploadsDir: (name: string) => `${ROOT}/repositories/${name}/_uploads`,
  uploadDir: (name: string, id: string) => `${ROOT}/repositories/${name}/_uploads/${id}`,
  uploadData: (name: string, id: string) => `${ROOT}/repositories/${name}/_uploads/${id}/data`,
  uploadStartedAt: (name: string, id: string) => `${ROOT}/repositories/${name}/_uploads/${id}/startedat`,
};

/** The last path component. */
export function basename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
