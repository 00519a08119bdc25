import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { registryError } from '../../errors/registry-error.js';
import type { Digest } from '../../oci/digest.js';
import type { ParsedManifest } from '../../oci/manifest.js';
import { assertName, type Reference } from '../../oci/reference.js';
import type {
  BlobContent,
  BlobStore,
  BlobUploads,
  ManifestStore,
  MountSource,
  Namespace,
  Repository,
  StoredManifest,
  TagList,
  TagPage,
  TagStore,
} from '../../registry/repository.js';
import { DecoratorFacet, RepositoryDecorator, type FacetClasses } from '../../registry/repository-decorator.js';
import type { RequestContext } from '../../registry/request-context.js';
import type { RegistryStore } from '../../storage/registry-store.js';
import type { UploadSession } from '../../uploads/session-store.js';
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

/** A repository with the index and locks (see {@link RepositoryDecorator}: facets made on first use, no closures). */
class IndexedRepository extends RepositoryDecorator<IndexedRepository> {
  constructor(
    inner: Repository,
    readonly deps: IndexingNamespaceDeps,
    private readonly ctx: RequestContext | undefined,
  ) {
    super(inner, INDEXED_FACETS);
  }

  /**
   * Runs a write into this repository holding its lock shared; when it took effect (its result is anything but
   * `false`), tells the index (`onlyIfNew`: a blob arrived, see {@link indexChanged}).
   */
  write<T>(fn: () => Promise<T>, onlyIfNew = false): Promise<T> {
    return this.deps.locks.shared(this.name, async () => {
      const result = await fn();
      if (result !== false) await this.indexChanged(this.name, onlyIfNew);
      return result;
    });
  }

  /** Tells the catalog index that `name` changed (`onlyIfNew`: unless it is known already); a failure is logged. */
  async indexChanged(name: string, onlyIfNew = false): Promise<void> {
    const { catalog, logger } = this.deps;
    try {
      await (onlyIfNew ? catalog.ensure(name) : catalog.refresh(name));
    } catch (err) {
      logger.warn({ err, repository: name, ...(this.ctx?.id ? { reqId: this.ctx.id } : {}) }, 'catalog index not updated');
    }
  }
}

class IndexedBlobs extends DecoratorFacet<BlobStore, IndexedRepository> implements BlobStore {
  get(d: Digest, options: { headOnly: boolean }): Promise<BlobContent | null> {
    return this.inner.get(d, options);
  }

  delete(d: Digest): Promise<boolean> {
    return this.inner.delete(d);
  }

  mount(d: Digest, source: MountSource): Promise<boolean> {
    return this.repo.write(() => this.inner.mount(d, source), true);
  }
}

class IndexedManifests extends DecoratorFacet<ManifestStore, IndexedRepository> implements ManifestStore {
  get(ref: Reference): Promise<StoredManifest | null> {
    return this.inner.get(ref);
  }

  put(bytes: Buffer, options: { contentType?: string; tag?: string; digest?: Digest }): Promise<{ digest: Digest; parsed: ParsedManifest }> {
    return this.repo.write(() => this.inner.put(bytes, options));
  }

  delete(d: Digest, removedTags?: string[]): Promise<boolean> {
    return this.repo.write(() => this.inner.delete(d, removedTags));
  }
}

class IndexedTags extends DecoratorFacet<TagStore, IndexedRepository> implements TagStore {
  list(page: TagPage): Promise<TagList | null> {
    return this.inner.list(page);
  }

  delete(tag: string): Promise<boolean> {
    return this.repo.write(() => this.inner.delete(tag));
  }
}

/**
 * Uploads holding the lock of the repository they push into, refused when begun before that repository was deleted,
 * and telling the index when a blob arrived.
 */
class IndexedUploads extends DecoratorFacet<BlobUploads, IndexedRepository> implements BlobUploads {
  start(name: string): Promise<UploadSession> {
    return this.repo.deps.locks.shared(name, () => this.inner.start(name));
  }

  async get(name: string, id: string): Promise<UploadSession> {
    await this.notDeleted(name, id);
    return this.inner.get(name, id);
  }

  append(name: string, id: string, body: Readable, range?: ChunkRange): Promise<UploadSession> {
    return this.repo.deps.locks.shared(name, async () => {
      await this.notDeleted(name, id);
      return this.inner.append(name, id, body, range);
    });
  }

  async cancel(name: string, id: string): Promise<void> {
    await this.notDeleted(name, id);
    await this.inner.cancel(name, id);
  }

  complete(name: string, id: string, d: Digest, body: Readable | null, range?: ChunkRange): Promise<void> {
    return this.repo.deps.locks.shared(name, async () => {
      await this.notDeleted(name, id);
      await this.inner.complete(name, id, d, body, range);
      await this.repo.indexChanged(name, true);
    });
  }

  monolithic(name: string, d: Digest, body: Readable, range?: ChunkRange): Promise<void> {
    return this.repo.deps.locks.shared(name, async () => {
      await this.inner.monolithic(name, d, body, range);
      await this.repo.indexChanged(name, true);
    });
  }

  /** An upload begun before its repository was deleted went with it (the delete removed its data). */
  private async notDeleted(name: string, id: string): Promise<void> {
    const deletedAt = await this.repo.deps.catalog.index.deletedAt(name);
    if (deletedAt === null) return;
    const session = await this.inner.get(name, id);
    if (session.startedAt <= deletedAt) {
      await this.inner.cancel(name, id).catch(() => undefined);
      throw registryError('BLOB_UPLOAD_UNKNOWN', { uuid: id });
    }
  }
}

const INDEXED_FACETS: FacetClasses<IndexedRepository> = {
  blobs: IndexedBlobs,
  manifests: IndexedManifests,
  tags: IndexedTags,
  uploads: IndexedUploads,
};
