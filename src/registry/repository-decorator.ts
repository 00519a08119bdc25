import type { Digest } from '../oci/digest.js';
import type { BlobStore, BlobUploads, ManifestStore, ReferrerDescriptor, Repository, TagStore } from './repository.js';

/**
 * A {@link Repository} that wraps another one (the events and the catalog index decorate the domain this way). One
 * is made for every request, and a request touches one or two facets: each facet is made on first use, by the
 * subclass's `wrap…` from the inner repository's facet, and kept. Subclasses write their facets as small classes
 * (methods on the prototype), so a request allocates one object per facet it uses and no closures.
 */
export abstract class RepositoryDecorator implements Repository {
  readonly name: string;
  readonly namespace?: string;
  private blobFacet: BlobStore | undefined;
  private manifestFacet: ManifestStore | undefined;
  private tagFacet: TagStore | undefined;
  private uploadFacet: BlobUploads | undefined;

  constructor(readonly inner: Repository) {
    this.name = inner.name;
    if (inner.namespace !== undefined) this.namespace = inner.namespace;
  }

  protected abstract wrapBlobs(inner: BlobStore): BlobStore;
  protected abstract wrapManifests(inner: ManifestStore): ManifestStore;
  protected abstract wrapTags(inner: TagStore): TagStore;
  protected abstract wrapUploads(inner: BlobUploads): BlobUploads;

  get blobs(): BlobStore {
    return (this.blobFacet ??= this.wrapBlobs(this.inner.blobs));
  }

  get manifests(): ManifestStore {
    return (this.manifestFacet ??= this.wrapManifests(this.inner.manifests));
  }

  get tags(): TagStore {
    return (this.tagFacet ??= this.wrapTags(this.inner.tags));
  }

  /** The inner uploads are touched only here (a mirror's `uploads` throws UNSUPPORTED when touched). */
  get uploads(): BlobUploads {
    return (this.uploadFacet ??= this.wrapUploads(this.inner.uploads));
  }

  referrers(subject: Digest, artifactType?: string): Promise<ReferrerDescriptor[]> {
    return this.inner.referrers(subject, artifactType);
  }
}
