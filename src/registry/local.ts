import type { Digest } from '../oci/digest.js';
import type { ParsedManifest } from '../oci/manifest.js';
import { registryError } from '../errors/registry-error.js';
import { assertName, type Reference } from '../oci/reference.js';
import { deleteRepositoryContent } from '../storage/repository-delete.js';
import { compareStrings, type RegistryStore, type StoredManifest } from '../storage/registry-store.js';
import type { UploadService } from '../uploads/upload-service.js';
import type { BlobContent, BlobStore, ManifestStore, MountSource, Namespace, Repository, TagList, TagPage, TagStore } from './repository.js';

/** Options of {@link LocalNamespace}. */
export interface LocalNamespaceOptions {
  /** A mount without `from` links the blob from a repository the caller may pull that has it (`berth.automaticcrossmount`). */
  automaticCrossMount: boolean;
}

/** The repositories in storage, pushed by clients (and the mirror's copies, which the proxy decorator reads). */
export class LocalNamespace implements Namespace {
  constructor(
    readonly store: RegistryStore,
    private readonly uploadService: UploadService,
    private readonly options: LocalNamespaceOptions,
  ) {}

  repository(name: string): Repository {
    return new LocalRepository(name, this.store, this.uploadService, this.options);
  }

  stored(name: string): Repository {
    return this.repository(name);
  }

  async catalog(page: TagPage): Promise<TagList> {
    const { names, more } = await this.store.catalogPage(page);
    const out: TagList = { tags: names };
    if (more && names.length > 0) out.next = names[names.length - 1] as string;
    return out;
  }

  async deleteRepository(name: string): Promise<void> {
    assertName(name);
    if (!(await this.store.repositoryExists(name))) throw registryError('NAME_UNKNOWN', { name });
    await deleteRepositoryContent(this.store.driver, name);
  }
}

/** Expiry of presigned redirect URLs for blob GETs, unless the driver configures its own. */
const REDIRECT_EXPIRY_SECONDS = 20 * 60;

/** A stored blob as {@link BlobContent}. */
export function storedBlob(store: RegistryStore, d: Digest, size: number): BlobContent {
  return {
    digest: d,
    size,
    redirectURL: (method) => store.blobRedirectURL(d, method, store.driver.redirectExpirySeconds ?? REDIRECT_EXPIRY_SECONDS),
    open: (start, end) => store.openBlob(d, start, (end ?? size) - start),
  };
}

/**
 * Spec: "the response ... MUST be in lexical order"; with `n`, at most n entries; with `last`, only entries after
 * it. `next` is set when more remain after a page of `n`.
 */
export function pageOf(all: string[], page: TagPage): TagList {
  const last = page.last;
  const after = last === undefined || last === '' ? all : all.filter((x) => compareStrings(x, last) > 0);
  if (page.n === undefined) return { tags: after };
  const tags = after.slice(0, page.n);
  const out: TagList = { tags };
  if (after.length > page.n && tags.length > 0) out.next = tags[tags.length - 1] as string;
  return out;
}

/**
 * One repository in storage. One is made per request: each facet is made on first use, a small object whose methods
 * live on the prototype.
 */
export class LocalRepository implements Repository {
  private blobFacet: LocalBlobs | undefined;
  private manifestFacet: LocalManifests | undefined;
  private tagFacet: LocalTags | undefined;

  constructor(
    readonly name: string,
    readonly store: RegistryStore,
    readonly uploads: UploadService,
    readonly options: LocalNamespaceOptions,
  ) {}

  get blobs(): BlobStore {
    return (this.blobFacet ??= new LocalBlobs(this));
  }

  get manifests(): ManifestStore {
    return (this.manifestFacet ??= new LocalManifests(this));
  }

  get tags(): TagStore {
    return (this.tagFacet ??= new LocalTags(this));
  }

  referrers(subject: Digest, artifactType?: string) {
    return this.store.referrers(this.name, subject, artifactType);
  }
}

class LocalBlobs implements BlobStore {
  constructor(private readonly repo: LocalRepository) {}

  async get(d: Digest): Promise<BlobContent | null> {
    const { name, store } = this.repo;
    const size = await store.repositoryBlobSize(name, d);
    return size === null ? null : storedBlob(store, d, size);
  }

  delete(d: Digest): Promise<boolean> {
    return this.repo.store.unlinkBlob(this.repo.name, d);
  }

  async mount(d: Digest, source: MountSource): Promise<boolean> {
    const { name, store, options } = this.repo;
    let mountable = false;
    if ('from' in source) mountable = (await store.repositoryBlobSize(assertName(source.from), d)) !== null;
    else if (options.automaticCrossMount && source.candidates === 'anywhere') mountable = (await store.blobSize(d)) !== null;
    else if (options.automaticCrossMount) {
      for (const candidate of source.candidates) {
        if (
          await store.repositoryBlobSize(candidate, d).then(
            (size) => size !== null,
            () => false,
          )
        ) {
          mountable = true;
          break;
        }
      }
    }
    if (mountable) await store.linkBlob(name, d);
    return mountable;
  }
}

class LocalManifests implements ManifestStore {
  constructor(private readonly repo: LocalRepository) {}

  get(ref: Reference): Promise<StoredManifest | null> {
    const { name, store } = this.repo;
    return ref.kind === 'digest' ? store.getManifest(name, ref.digest) : store.manifestByTag(name, ref.tag);
  }

  put(bytes: Buffer, options: { contentType?: string; tag?: string; digest?: Digest }): Promise<{ digest: Digest; parsed: ParsedManifest }> {
    return this.repo.store.putManifest(this.repo.name, bytes, options);
  }

  delete(d: Digest, removedTags?: string[]): Promise<boolean> {
    return this.repo.store.deleteManifest(this.repo.name, d, removedTags);
  }
}

class LocalTags implements TagStore {
  constructor(private readonly repo: LocalRepository) {}

  async list(page: TagPage): Promise<TagList | null> {
    const all = await this.repo.store.listTags(this.repo.name);
    return all === null ? null : pageOf(all, page);
  }

  delete(tag: string): Promise<boolean> {
    return this.repo.store.deleteTag(this.repo.name, tag);
  }
}
