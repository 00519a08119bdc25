import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { Reference } from '../oci/reference.js';
import type { ParsedManifest } from '../oci/manifest.js';
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
} from '../registry/repository.js';
import { DecoratorFacet, RepositoryDecorator, type FacetClasses } from '../registry/repository-decorator.js';
import type { UploadSession } from '../uploads/session-store.js';
import type { ChunkRange } from '../uploads/upload-service.js';
import { BLOB_MEDIA_TYPE, manifestReferences, type RequestContext } from './event.js';
import type { EventSink } from './registry-events.js';

/**
 * The domain with events: a decorator of {@link Namespace} (outside the pull-through cache, so pulls it serves
 * count too) whose repositories emit registry:2's events after each operation took effect, with the request
 * context the HTTP layer passes to {@link Namespace.repository}:
 * - `push` of a blob when its upload is committed (monolithic or closing PUT), of a manifest when stored (with the
 *   tag it was pushed by);
 * - `pull` of a manifest (with the tag asked for) or a blob when found for a GET or HEAD;
 * - `mount` of a blob linked from another repository;
 * - `delete` of a blob link, of a manifest revision followed by one per tag that pointed at it (as registry:2),
 *   of a tag, of a whole repository (naming only the repository).
 */
export class EventingNamespace implements Namespace {
  constructor(
    private readonly inner: Namespace,
    private readonly events: EventSink,
  ) {}

  repository(name: string, ns?: string, ctx?: RequestContext): Repository {
    const repo = this.inner.repository(name, ns);
    return ctx ? new EventingRepository(repo, this.events, ctx) : repo;
  }

  stored(name: string, ctx?: RequestContext): Repository {
    const repo = this.inner.stored(name, ctx);
    return ctx ? new EventingRepository(repo, this.events, ctx) : repo;
  }

  catalog(page: TagPage): Promise<TagList> {
    return this.inner.catalog(page);
  }

  /** One `delete` event naming only the repository (registry:2 has no repository delete; berth's own event). */
  async deleteRepository(name: string, ctx?: RequestContext): Promise<void> {
    await this.inner.deleteRepository(name, ctx);
    if (ctx) await this.events.emit('delete', { repository: name }, ctx);
  }
}

/** A repository with events (see {@link RepositoryDecorator}: facets made on first use, no closures per request). */
class EventingRepository extends RepositoryDecorator<EventingRepository> {
  constructor(
    inner: Repository,
    readonly events: EventSink,
    readonly ctx: RequestContext,
  ) {
    super(inner, EVENTING_FACETS);
  }

  blobEvent(size: number | undefined, d: Digest) {
    return {
      repository: this.name,
      digest: d.value,
      mediaType: BLOB_MEDIA_TYPE,
      kind: 'blob' as const,
      ...(size === undefined ? {} : { size }),
    };
  }

  /** The size of a blob just pushed or mounted, for its event. */
  async blobSize(d: Digest): Promise<number | undefined> {
    return (await this.inner.blobs.get(d, { headOnly: true }))?.size;
  }

  async pushed(d: Digest): Promise<void> {
    await this.events.emit('push', this.blobEvent(await this.blobSize(d), d), this.ctx);
  }
}

class EventingBlobs extends DecoratorFacet<BlobStore, EventingRepository> implements BlobStore {
  async get(d: Digest, options: { headOnly: boolean }): Promise<BlobContent | null> {
    const content = await this.inner.get(d, options);
    const { events, ctx } = this.repo;
    if (content && events.wants('pull')) await events.emit('pull', this.repo.blobEvent(content.size, d), ctx);
    return content;
  }

  async delete(d: Digest): Promise<boolean> {
    const deleted = await this.inner.delete(d);
    const { events, ctx, name } = this.repo;
    if (deleted) await events.emit('delete', { repository: name, digest: d.value, kind: 'blob' }, ctx);
    return deleted;
  }

  async mount(d: Digest, from: MountSource): Promise<boolean> {
    const mounted = await this.inner.mount(d, from);
    if (mounted) {
      const { events, ctx } = this.repo;
      const ev = this.repo.blobEvent(await this.repo.blobSize(d), d);
      await events.emit('mount', 'from' in from ? { ...ev, fromRepository: from.from } : ev, ctx);
    }
    return mounted;
  }
}

class EventingManifests extends DecoratorFacet<ManifestStore, EventingRepository> implements ManifestStore {
  /** Without an endpoint for pulls, the inner answer is handed on as it is (no extra step per manifest GET). */
  get(ref: Reference): Promise<StoredManifest | null> {
    return this.repo.events.wants('pull') ? this.pulled(ref) : this.inner.get(ref);
  }

  private async pulled(ref: Reference): Promise<StoredManifest | null> {
    const m = await this.inner.get(ref);
    if (m) {
      const { events, ctx, name } = this.repo;
      let references: ReturnType<typeof manifestReferences> | undefined;
      await events.emit(
        'pull',
        {
          repository: name,
          digest: m.digest.value,
          mediaType: m.mediaType,
          size: m.bytes.length,
          kind: 'manifest',
          // Parsed only when an event is built (an endpoint takes pulls): the endpoint's media-type filter
          // decides after the subject is made.
          get references() {
            return (references ??= manifestReferences(m.bytes));
          },
          ...(ref.kind === 'tag' ? { tag: ref.tag } : {}),
        },
        ctx,
      );
    }
    return m;
  }

  async put(bytes: Buffer, options: { contentType?: string; tag?: string; digest?: Digest }): Promise<{ digest: Digest; parsed: ParsedManifest }> {
    const result = await this.inner.put(bytes, options);
    const { events, ctx, name } = this.repo;
    await events.emit(
      'push',
      {
        repository: name,
        digest: result.digest.value,
        mediaType: result.parsed.mediaType,
        size: bytes.length,
        kind: 'manifest',
        references: manifestReferences(bytes),
        ...(options.tag !== undefined ? { tag: options.tag } : {}),
      },
      ctx,
    );
    return result;
  }

  async delete(d: Digest, removedTags?: string[]): Promise<boolean> {
    // registry:2 follows a manifest delete with a delete of each tag that pointed at it.
    const tags: string[] = [];
    const deleted = await this.inner.delete(d, tags);
    removedTags?.push(...tags);
    if (deleted) {
      const { events, ctx, name } = this.repo;
      await events.emit('delete', { repository: name, digest: d.value, kind: 'manifest' }, ctx);
      for (const tag of tags) await events.emit('delete', { repository: name, tag }, ctx);
    }
    return deleted;
  }
}

class EventingTags extends DecoratorFacet<TagStore, EventingRepository> implements TagStore {
  list(page: TagPage): Promise<TagList | null> {
    return this.inner.list(page);
  }

  async delete(tag: string): Promise<boolean> {
    const deleted = await this.inner.delete(tag);
    const { events, ctx, name } = this.repo;
    if (deleted) await events.emit('delete', { repository: name, tag }, ctx);
    return deleted;
  }
}

/** Uploads with a `push` event when a blob is committed. */
class EventingUploads extends DecoratorFacet<BlobUploads, EventingRepository> implements BlobUploads {
  start(name: string): Promise<UploadSession> {
    return this.inner.start(name);
  }

  get(name: string, id: string): Promise<UploadSession> {
    return this.inner.get(name, id);
  }

  append(name: string, id: string, body: Readable, range?: ChunkRange): Promise<UploadSession> {
    return this.inner.append(name, id, body, range);
  }

  cancel(name: string, id: string): Promise<void> {
    return this.inner.cancel(name, id);
  }

  async complete(name: string, id: string, d: Digest, body: Readable | null, range?: ChunkRange): Promise<void> {
    await this.inner.complete(name, id, d, body, range);
    await this.repo.pushed(d);
  }

  async monolithic(name: string, d: Digest, body: Readable, range?: ChunkRange): Promise<void> {
    await this.inner.monolithic(name, d, body, range);
    await this.repo.pushed(d);
  }
}

const EVENTING_FACETS: FacetClasses<EventingRepository> = {
  blobs: EventingBlobs,
  manifests: EventingManifests,
  tags: EventingTags,
  uploads: EventingUploads,
};
