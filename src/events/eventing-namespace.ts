import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { Reference } from '../oci/reference.js';
import type { BlobStore, BlobUploads, ManifestStore, Namespace, Repository, TagList, TagPage, TagStore } from '../registry/repository.js';
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

/**
 * A repository with events. Each facet (blobs, manifests, tags, uploads) is built on first use: a request touches
 * one or two of them, and this object is made for every request.
 */
class EventingRepository implements Repository {
  readonly name: string;
  readonly namespace?: string;
  private wrappedBlobs: BlobStore | undefined;
  private wrappedManifests: ManifestStore | undefined;
  private wrappedTags: TagStore | undefined;
  private wrappedUploads: BlobUploads | undefined;

  constructor(
    private readonly inner: Repository,
    private readonly events: EventSink,
    private readonly ctx: RequestContext,
  ) {
    this.name = inner.name;
    if (inner.namespace !== undefined) this.namespace = inner.namespace;
  }

  private async blobSize(d: Digest): Promise<number | undefined> {
    return (await this.inner.blobs.get(d, { headOnly: true }))?.size;
  }

  private blobEvent(size: number | undefined, d: Digest) {
    return {
      repository: this.name,
      digest: d.value,
      mediaType: BLOB_MEDIA_TYPE,
      kind: 'blob' as const,
      ...(size === undefined ? {} : { size }),
    };
  }

  private async pushed(d: Digest): Promise<void> {
    await this.events.emit('push', this.blobEvent(await this.blobSize(d), d), this.ctx);
  }

  get blobs(): BlobStore {
    if (this.wrappedBlobs) return this.wrappedBlobs;
    const { inner, events, ctx, name } = this;
    this.wrappedBlobs = {
      get: async (d, options) => {
        const content = await inner.blobs.get(d, options);
        if (content && events.wants('pull')) await events.emit('pull', this.blobEvent(content.size, d), ctx);
        return content;
      },
      delete: async (d) => {
        const deleted = await inner.blobs.delete(d);
        if (deleted) await events.emit('delete', { repository: name, digest: d.value, kind: 'blob' }, ctx);
        return deleted;
      },
      mount: async (d, from) => {
        const mounted = await inner.blobs.mount(d, from);
        if (mounted) {
          const ev = this.blobEvent(await this.blobSize(d), d);
          await events.emit('mount', 'from' in from ? { ...ev, fromRepository: from.from } : ev, ctx);
        }
        return mounted;
      },
    };
    return this.wrappedBlobs;
  }

  get manifests(): ManifestStore {
    if (this.wrappedManifests) return this.wrappedManifests;
    const { inner, events, ctx, name } = this;
    const pulled = async (ref: Reference) => {
      const m = await inner.manifests.get(ref);
      if (m) {
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
    };
    this.wrappedManifests = {
      // Without an endpoint for pulls, the inner answer is handed on as it is (no extra step per manifest GET).
      get: (ref: Reference) => (events.wants('pull') ? pulled(ref) : inner.manifests.get(ref)),
      put: async (bytes, options) => {
        const result = await inner.manifests.put(bytes, options);
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
      },
      delete: async (d, removedTags) => {
        // registry:2 follows a manifest delete with a delete of each tag that pointed at it.
        const tags: string[] = [];
        const deleted = await inner.manifests.delete(d, tags);
        removedTags?.push(...tags);
        if (deleted) {
          await events.emit('delete', { repository: name, digest: d.value, kind: 'manifest' }, ctx);
          for (const tag of tags) await events.emit('delete', { repository: name, tag }, ctx);
        }
        return deleted;
      },
    };
    return this.wrappedManifests;
  }

  get tags(): TagStore {
    if (this.wrappedTags) return this.wrappedTags;
    const { inner, events, ctx, name } = this;
    this.wrappedTags = {
      list: (page) => inner.tags.list(page),
      delete: async (tag) => {
        const deleted = await inner.tags.delete(tag);
        if (deleted) await events.emit('delete', { repository: name, tag }, ctx);
        return deleted;
      },
    };
    return this.wrappedTags;
  }

  /** Wraps the inner uploads on first use (a mirror's `uploads` throws UNSUPPORTED when touched). */
  get uploads(): BlobUploads {
    if (this.wrappedUploads) return this.wrappedUploads;
    const uploads = this.inner.uploads;
    const pushed = (d: Digest) => this.pushed(d);
    this.wrappedUploads = {
      start: (repo) => uploads.start(repo),
      get: (repo, id) => uploads.get(repo, id),
      append: (repo, id, body, range) => uploads.append(repo, id, body, range),
      cancel: (repo, id) => uploads.cancel(repo, id),
      complete: async (repo: string, id: string, d: Digest, body: Readable | null, range?: ChunkRange) => {
        await uploads.complete(repo, id, d, body, range);
        await pushed(d);
      },
      monolithic: async (repo: string, d: Digest, body: Readable, range?: ChunkRange) => {
        await uploads.monolithic(repo, d, body, range);
        await pushed(d);
      },
    };
    return this.wrappedUploads;
  }

  referrers(subject: Digest, artifactType?: string) {
    return this.inner.referrers(subject, artifactType);
  }
}
