import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { registryError } from '../../errors/registry-error.js';
import type { Digest } from '../../oci/digest.js';
import { assertName } from '../../oci/reference.js';
import type { BlobStore, BlobUploads, ManifestStore, Namespace, Repository, TagList, TagPage, TagStore } from '../../registry/repository.js';
import type { RequestContext } from '../../registry/request-context.js';
import type { RegistryStore } from '../../storage/registry-store.js';
import type { ChunkRange } from '../../uploads/upload-service.js';
import type { CatalogIndex } from './catalog-index.js';
import type { RepositoryLocks } from './repository-locks.js';

/** What {@link IndexingNamespace} keeps up to date and holds. */
export interface IndexingNamespaceDeps {
  /** Told about every push and delete. */
  catalog: CatalogIndex;
  /** Writes into a repository hold its lock shared; a repository delete holds it exclusively. */
  locks: RepositoryLocks;
  /** Whether a repository exists (a delete checks before it marks the repository deleted). */
  store: Pick<RegistryStore, 'repositoryExists'>;
  /** How long upload sessions live (`berth.uploadsessionttl`): how long a delete refuses uploads begun before it. */
  uploadSessionTtlMs: number;
  logger: Logger;
}

/**
 * The domain with the catalog index and the per-repository locks: a decorator of {@link Namespace} (outermost, so
 * the locks also cover the events the inner layers queue) whose repositories
 * - run every write (manifest PUT and DELETE, tag DELETE, blob mount, upload start, chunk and completion) holding
 *   the repository's lock shared, so a repository delete never interleaves with them in this process;
 * - tell the catalog index after a manifest or tag changed (`refresh`) and after a blob arrived (`ensure`: a first
 *   push makes the repository known); an index failure is logged, never fails the write that took effect;
 * - refuse (BLOB_UPLOAD_UNKNOWN, session cancelled) an upload begun before its repository was deleted, also when the
 *   delete ran in another process (the deleted-at marker lives in the index, in Redis when configured);
 * and whose `deleteRepository` holds the lock exclusively, marks the repository deleted, removes it and drops it from
 * the index.
 */
export class IndexingNamespace implements Namespace {
  constructor(
    private readonly inner: Namespace,
    private readonly deps: IndexingNamespaceDeps,
  ) {}

  repository(name: string, ns?: string, ctx?: RequestContext): Repository {
    return new IndexedRepository(this.inner.repository(name, ns, ctx), this.deps, ctx);
  }

  stored(name: string, ctx?: RequestContext): Repository {
    return new IndexedRepository(this.inner.stored(name, ctx), this.deps, ctx);
  }

  catalog(page: TagPage): Promise<TagList> {
    return this.inner.catalog(page);
  }

  async deleteRepository(name: string, ctx?: RequestContext): Promise<void> {
    assertName(name);
    const { catalog, locks, store, uploadSessionTtlMs } = this.deps;
    await locks.exclusive(name, async () => {
      if (!(await store.repositoryExists(name))) throw registryError('NAME_UNKNOWN', { name });
      // Uploads begun before now are refused from here on (their sessions may live in Redis, beyond this process).
      await catalog.index.markDeleted(name, Date.now(), uploadSessionTtlMs);
      await this.inner.deleteRepository(name, ctx);
      await catalog.forget(name);
    });
  }
}

/** A repository with the index and locks; each facet is built on first use (a request touches one or two). */
class IndexedRepository implements Repository {
  readonly name: string;
  readonly namespace?: string;
  private wrappedBlobs: BlobStore | undefined;
  private wrappedManifests: ManifestStore | undefined;
  private wrappedTags: TagStore | undefined;
  private wrappedUploads: BlobUploads | undefined;

  constructor(
    private readonly inner: Repository,
    private readonly deps: IndexingNamespaceDeps,
    private readonly ctx: RequestContext | undefined,
  ) {
    this.name = inner.name;
    if (inner.namespace !== undefined) this.namespace = inner.namespace;
  }

  private shared<T>(fn: () => Promise<T>): Promise<T> {
    return this.deps.locks.shared(this.name, fn);
  }

  get blobs(): BlobStore {
    if (this.wrappedBlobs) return this.wrappedBlobs;
    const { inner, name } = this;
    this.wrappedBlobs = {
      get: (d, options) => inner.blobs.get(d, options),
      delete: (d) => inner.blobs.delete(d),
      mount: (d, source) =>
        this.shared(async () => {
          const mounted = await inner.blobs.mount(d, source);
          if (mounted) await this.indexChanged(name, true);
          return mounted;
        }),
    };
    return this.wrappedBlobs;
  }

  get manifests(): ManifestStore {
    if (this.wrappedManifests) return this.wrappedManifests;
    const { inner, name } = this;
    this.wrappedManifests = {
      get: (ref) => inner.manifests.get(ref),
      put: (bytes, options) =>
        this.shared(async () => {
          const result = await inner.manifests.put(bytes, options);
          await this.indexChanged(name);
          return result;
        }),
      delete: (d, removedTags) =>
        this.shared(async () => {
          const deleted = await inner.manifests.delete(d, removedTags);
          if (deleted) await this.indexChanged(name);
          return deleted;
        }),
    };
    return this.wrappedManifests;
  }

  get tags(): TagStore {
    if (this.wrappedTags) return this.wrappedTags;
    const { inner, name } = this;
    this.wrappedTags = {
      list: (page) => inner.tags.list(page),
      delete: (tag) =>
        this.shared(async () => {
          const deleted = await inner.tags.delete(tag);
          if (deleted) await this.indexChanged(name);
          return deleted;
        }),
    };
    return this.wrappedTags;
  }

  /** Wraps the inner uploads on first use (a mirror's `uploads` throws UNSUPPORTED when touched). */
  get uploads(): BlobUploads {
    if (this.wrappedUploads) return this.wrappedUploads;
    const uploads = this.inner.uploads;
    const { locks, catalog } = this.deps;
    /** An upload begun before its repository was deleted went with it (the delete removed its data). */
    const notDeleted = async (repo: string, id: string): Promise<void> => {
      const deletedAt = await catalog.index.deletedAt(repo);
      if (deletedAt === null) return;
      const session = await uploads.get(repo, id);
      if (session.startedAt <= deletedAt) {
        await uploads.cancel(repo, id).catch(() => undefined);
        throw registryError('BLOB_UPLOAD_UNKNOWN', { uuid: id });
      }
    };
    this.wrappedUploads = {
      start: (repo) => locks.shared(repo, () => uploads.start(repo)),
      get: async (repo, id) => {
        await notDeleted(repo, id);
        return uploads.get(repo, id);
      },
      append: (repo, id, body, range) =>
        locks.shared(repo, async () => {
          await notDeleted(repo, id);
          return uploads.append(repo, id, body, range);
        }),
      cancel: async (repo, id) => {
        await notDeleted(repo, id);
        await uploads.cancel(repo, id);
      },
      complete: (repo: string, id: string, d: Digest, body: Readable | null, range?: ChunkRange) =>
        locks.shared(repo, async () => {
          await notDeleted(repo, id);
          await uploads.complete(repo, id, d, body, range);
          await this.indexChanged(repo, true);
        }),
      monolithic: (repo: string, d: Digest, body: Readable, range?: ChunkRange) =>
        locks.shared(repo, async () => {
          await uploads.monolithic(repo, d, body, range);
          await this.indexChanged(repo, true);
        }),
    };
    return this.wrappedUploads;
  }

  referrers(subject: Digest, artifactType?: string) {
    return this.inner.referrers(subject, artifactType);
  }

  /** Tells the catalog index that `name` changed (`onlyIfNew`: unless it is known already); a failure is logged. */
  private async indexChanged(name: string, onlyIfNew = false): Promise<void> {
    const { catalog, logger } = this.deps;
    try {
      await (onlyIfNew ? catalog.ensure(name) : catalog.refresh(name));
    } catch (err) {
      logger.warn({ err, repository: name, ...(this.ctx?.id ? { reqId: this.ctx.id } : {}) }, 'catalog index not updated');
    }
  }
}
