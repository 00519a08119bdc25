import type { Digest } from '../oci/digest.js';
import type { BlobStore, BlobUploads, ManifestStore, ReferrerDescriptor, Repository, TagStore } from './repository.js';

/** A facet of a decorator: made from the inner repository's facet and the decorating repository. */
export type FacetClass<F, R> = new (inner: F, repo: R) => F;

/** The classes of a decorator's facets (one set per decorator, shared by all its repositories). */
export interface FacetClasses<R> {
  blobs: FacetClass<BlobStore, R>;
  manifests: FacetClass<ManifestStore, R>;
  tags: FacetClass<TagStore, R>;
  uploads: FacetClass<BlobUploads, R>;
}

/** The base of a decorator's facet classes: the inner repository's facet it wraps and the decorating repository. */
export abstract class DecoratorFacet<F, R> {
  constructor(
    protected readonly inner: F,
    protected readonly repo: R,
  ) {}
}

/**
 * A {@link Repository} that wraps another one (the events and the catalog index decorate the domain this way). One
 * is made for every request, and a request touches one or two facets: each facet is made on first use, from the
 * inner repository's facet by the decorator's class for it (`R`: the subclass, which the facets read), and kept. The
 * facets are small classes (methods on the prototype), so a request allocates one object per facet it uses and no
 * closures.
 */
export abstract class RepositoryDecorator<R extends RepositoryDecorator<R>> implements Repository {
  readonly name: string;
  readonly namespace?: string;
  private blobFacet: BlobStore | undefined;
  private manifestFacet: ManifestStore | undefined;
  private tagFacet: TagStore | undefined;
  private uploadFacet: BlobUploads | undefined;

  constructor(
    readonly inner: Repository,
    private readonly facets: FacetClasses<R>,
  ) {
    this.name = inner.name;
    if (inner.namespace !== undefined) this.namespace = inner.namespace;
  }

  /** This repository as the subclass its facets take. */
  private get self(): R {
    return this as unknown as R;
  }

  get blobs(): BlobStore {
    return (this.blobFacet ??= new this.facets.blobs(this.inner.blobs, this.self));
  }

  get manifests(): ManifestStore {
    return (this.manifestFacet ??= new this.facets.manifests(this.inner.manifests, this.self));
  }

  get tags(): TagStore {
    return (this.tagFacet ??= new this.facets.tags(this.inner.tags, this.self));
  }

  /** The inner uploads are touched only here (a mirror's `uploads` throws UNSUPPORTED when touched). */
  get uploads(): BlobUploads {
    return (this.uploadFacet ??= new this.facets.uploads(this.inner.uploads, this.self));
  }

  referrers(subject: Digest, artifactType?: string): Promise<ReferrerDescriptor[]> {
    return this.inner.referrers(subject, artifactType);
  }
}
