import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { ParsedManifest } from '../oci/manifest.js';
import type { Reference } from '../oci/reference.js';
import type { ReferrerDescriptor, StoredManifest } from '../storage/registry-store.js';
import type { ChunkRange } from '../uploads/upload-service.js';
import type { UploadSession } from '../uploads/session-store.js';
import type { RequestContext } from './request-context.js';

export type { ReferrerDescriptor, StoredManifest } from '../storage/registry-store.js';

/**
 * The registry domain as the `/v2/` routes see it: a {@link Namespace} of {@link Repository}s, each with its blobs,
 * manifests, tags, referrers and uploads. The local implementation (`local.ts`) reads and writes storage; the
 * pull-through cache (`src/proxy/`) implements the same interfaces as a decorator (local first, then the
 * upstream; writes UNSUPPORTED), so the routes never know whether a repository is mirrored and every answer is
 * written once, in `src/http/`.
 *
 * Methods throw `RegistryError`s (src/errors) for what the client did wrong or asked for in vain, and driver
 * errors (`isNotFound`, `BackendUnavailableError`) for storage trouble.
 */

/** The bytes of one blob, found but not yet opened. */
export interface BlobContent {
  readonly digest: Digest;
  /** Its size in bytes; undefined while not known (a mirror download whose upstream sent no length). */
  readonly size: number | undefined;
  /** A URL the client may fetch the bytes from directly (a presigned S3 URL); null when storage offers none. */
  redirectURL(method: 'GET' | 'HEAD'): Promise<string | null>;
  /**
   * The bytes from `start` up to `end` (exclusive; undefined: to the end). Rejects with a driver not-found error
   * when the blob was deleted since it was found (gc, a concurrent delete).
   */
  open(start: number, end: number | undefined): Promise<Readable>;
}

/** Blobs as linked into one repository. */
export interface BlobStore {
  /**
   * The blob, or null when this repository has no such blob. With `headOnly` nothing is downloaded or opened: a
   * mirror asks its upstream for the size only.
   */
  get(d: Digest, options: { headOnly: boolean }): Promise<BlobContent | null>;
  /** Unlinks the blob from this repository (the bytes stay until gc); false when it was not linked. */
  delete(d: Digest): Promise<boolean>;
  /**
   * Links a blob stored for another repository: `from`, else (`berth.automaticcrossmount`) one of `candidates`, the
   * repositories the caller may pull (`anywhere`: any repository that has it); false when it is not there (the client
   * then uploads it). A caller never gains a blob it could not read.
   */
  mount(d: Digest, source: MountSource): Promise<boolean>;
}

/** Manifests of one repository. */
export interface ManifestStore {
  /** The manifest a tag or digest names in this repository, or null. */
  get(ref: Reference): Promise<StoredManifest | null>;
  /** Stores a manifest pushed by a client, tagging it when `tag` is given. */
  put(bytes: Buffer, options: { contentType?: string; tag?: string; digest?: Digest }): Promise<{ digest: Digest; parsed: ParsedManifest }>;
  /**
   * Deletes a manifest revision and the tags pointing at it; false when there is none. The tags removed are
   * appended to `removedTags` (registry:2 sends a tag delete event for each).
   */
  delete(d: Digest, removedTags?: string[]): Promise<boolean>;
}

/** Which page of a tag list: at most `n` (undefined: all) tags after `last`. */
export interface TagPage {
  n?: number;
  last?: string;
}

/** A page of tags, lexically ordered; `next` is the `last` of the following page when there is one. */
export interface TagList {
  tags: string[];
  next?: string;
}

/** Tags of one repository. */
export interface TagStore {
  /** A page of the tags, or null when the repository is not known. */
  list(page: TagPage): Promise<TagList | null>;
  /** Removes a tag (the manifest stays); false when there is none. */
  delete(tag: string): Promise<boolean>;
}

/**
 * Blob upload sessions of a repository (what `UploadService` offers the routes); see src/uploads/upload-service.ts
 * for the contract of each call. A blob becomes part of the repository when `complete` or `monolithic` resolves.
 */
export interface BlobUploads {
  start(repo: string): Promise<UploadSession>;
  get(repo: string, id: string): Promise<UploadSession>;
  append(repo: string, id: string, body: Readable, range?: ChunkRange): Promise<UploadSession>;
  complete(repo: string, id: string, digest: Digest, body: Readable | null, range?: ChunkRange): Promise<void>;
  monolithic(repo: string, digest: Digest, body: Readable, range?: ChunkRange): Promise<void>;
  cancel(repo: string, id: string): Promise<void>;
}

/** One repository (local or mirrored). */
export interface Repository {
  readonly name: string;
  /** For a mirrored repository requested with `?ns=`: the upstream namespace it is served from. */
  readonly namespace?: string;
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly tags: TagStore;
  /** Upload sessions for pushing blobs into this repository (a mirror throws UNSUPPORTED). */
  readonly uploads: BlobUploads;
  /** Manifests whose subject is `subject`, optionally only of one artifact type, ordered by digest. */
  referrers(subject: Digest, artifactType?: string): Promise<ReferrerDescriptor[]>;
}

/** All repositories. */
export interface Namespace {
  /**
   * The repository `name` (as requested with `?ns=` when given). Throws NAME_UNKNOWN for a name nothing serves.
   * `ctx` is the request it serves, for the events the domain emits (implementations that emit none ignore it).
   */
  repository(name: string, ns?: string, ctx?: RequestContext): Repository;
  /**
   * The repository `name` as kept in this registry's storage, for the deletes of the JSON API and the web UI: the
   * same as {@link repository}, except that for a name a mirror serves it is the cached copy (deleting from it evicts
   * what was cached, as {@link deleteRepository} does; the next pull fetches it again). `ctx` as for
   * {@link repository}.
   */
  stored(name: string, ctx?: RequestContext): Repository;
  /**
   * One page of repository names, lexically ordered (`n` and `last` as for tags); `next` is set when more follow.
   * A page reads only as much of storage as it needs.
   */
  catalog(page: TagPage): Promise<TagList>;
  /**
   * Deletes the repository `name` as a whole: tags, manifests, layer links, referrers and uploads (nested
   * repositories stay; blobs stay until gc). Throws NAME_UNKNOWN when there is no such repository. `ctx` as for
   * {@link repository}: the events of the deletion name it (the command line passes its own, see `cliContext`).
   */
  deleteRepository(name: string, ctx?: RequestContext): Promise<void>;
}

/** Where a mount may take its blob from: the `from` the client named, or the repositories the caller may pull. */
export type MountSource = { from: string } | { candidates: 'anywhere' | readonly string[] };
