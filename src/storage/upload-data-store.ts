import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { isNotFound, type FileWriter, type StorageDriver, type WriterState } from './driver.js';
import { deleteIfPresent, listOrEmpty } from './driver-utils.js';
import { basename, paths } from './paths.js';
import type { RegistryStore } from './registry-store.js';

/** The most empty upload folders {@link UploadDataStore} keeps for reuse per repository, and in all; and how long. */
const SPARES_PER_REPOSITORY = 8;
const SPARES = 256;
const SPARE_MS = 10 * 60_000;

/**
 * The bytes of blob uploads, under `repositories/<name>/_uploads/<id>/` (see the tree in paths.ts): `data`, written
 * through driver writers across requests, and `startedat`, read by upload purging (registry:2's and berth's).
 * The upload service keeps sessions and digests; every storage path of an upload is built here.
 */
export class UploadDataStore {
  /**
   * Empty folders of completed uploads, each renamed to a new random id, by repository, oldest first: the next
   * uploads of that repository take them instead of creating a folder (see {@link finish}). Only on the filesystem
   * driver (S3 has no folders), only in this process (one left at exit is an empty upload folder, which upload
   * purging removes once it is stale), at most {@link SPARES_PER_REPOSITORY} per repository and {@link SPARES} in
   * all, each for {@link SPARE_MS} (then removed: an upload folder idle that long comes nearer to being purged as
   * stale, which must never happen to one just taken).
   */
  private readonly spares = new Map<string, Array<{ id: string; at: number }>>();
  /** Kept folders, in all. */
  private spareCount = 0;
  private readonly recycles: boolean;
  /** Folders being removed that no answer waits for (see {@link settle}). */
  private readonly removals = new Set<Promise<void>>();

  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: Pick<RegistryStore, 'blobSize' | 'linkBlob'>,
    /** Hears of a folder whose removal after its answer failed. */
    private readonly warn: (err: unknown, msg: string) => void = () => undefined,
  ) {
    this.recycles = driver.name === 'filesystem';
  }

  /**
   * Starts an upload of `repo`: picks its id (a folder kept by {@link finish}, else a new random UUID) and records
   * when it started in `startedat` (RFC 3339, as registry:2 writes it). Returns the id.
   */
  async start(repo: string, startedAt: Date): Promise<string> {
    this.expire(repo);
    const spares = this.spares.get(repo);
    const spare = spares?.pop();
    if (spare) {
      this.spareCount--;
      if (spares?.length === 0) this.spares.delete(repo);
    }
    const id = spare?.id ?? randomUUID();
    await this.driver.putContent(paths.uploadStartedAt(repo, id), Buffer.from(startedAt.toISOString()));
    return id;
  }

  /** Resolves once the folders being removed after their answers are gone (a server waits before closing storage). */
  async settle(): Promise<void> {
    while (this.removals.size > 0) await Promise.all(this.removals);
  }

  /** Removes the folder `dir` without anyone waiting for it (tracked for {@link settle}). */
  private removeLater(dir: string): void {
    const removal: Promise<void> = deleteIfPresent(this.driver, dir)
      .then(
        () => undefined,
        (err: unknown) => this.warn(err, 'removing an empty upload folder failed (upload purging removes it once stale)'),
      )
      .finally(() => this.removals.delete(removal));
    this.removals.add(removal);
  }

  /** Removes the folders of `repo` kept longer than {@link SPARE_MS}. */
  private expire(repo: string): void {
    const spares = this.spares.get(repo);
    const before = Date.now() - SPARE_MS;
    while (spares?.[0] && spares[0].at <= before) {
      const { id } = spares.shift()!;
      this.spareCount--;
      this.removeLater(paths.uploadDir(repo, id));
    }
    if (spares?.length === 0) this.spares.delete(repo);
  }

  /**
   * A writer of the upload's data: new, or continuing after exactly the bytes `state` records. Nothing reads an
   * upload's data while a request writes it (a session has one writer at a time; completion reads it after the
   * writer closed), so the driver may write it out of order.
   */
  writer(repo: string, id: string, state?: WriterState): Promise<FileWriter> {
    return this.driver.writer(paths.uploadData(repo, id), state, { followed: false });
  }

  /** Streams `length` bytes of the upload's data from `offset` (the data must be readable: see {@link commitInPlace}). */
  reader(repo: string, id: string, offset: number, length: number): Promise<Readable> {
    return this.driver.reader(paths.uploadData(repo, id), offset, length);
  }

  /**
   * Makes upload data readable where it is (S3 completes its multipart upload) and returns the state that records
   * it; a no-op for a state already committed.
   */
  async commitInPlace(repo: string, id: string, state: WriterState): Promise<WriterState> {
    if (isCommitted(state)) return state;
    const writer = await this.writer(repo, id, state);
    await writer.commit();
    return committedState(state.size);
  }

  /**
   * Makes the upload's `size` bytes (already verified to have `digest`) the blob `digest` and links it into `repo`.
   * A blob already stored with that size is kept (its data is content-addressed); otherwise the data is committed and
   * moved into place, so the blob appears all at once. An empty upload (no `state`) stores an empty blob. Returns the
   * state of the data left at the upload path (committed once it was committed), for the caller to discard.
   */
  async commitUpload(repo: string, id: string, digest: Digest, data: { size: number; state?: WriterState }): Promise<WriterState | undefined> {
    let state = data.state;
    if ((await this.blobs.blobSize(digest)) !== data.size) {
      const target = paths.blobData(digest);
      if (state) {
        state = await this.commitInPlace(repo, id, state);
        await this.driver.move(paths.uploadData(repo, id), target);
      } else {
        await this.driver.putContent(target, Buffer.alloc(0));
      }
    }
    await this.blobs.linkBlob(repo, digest);
    return state;
  }

  /** Removes an upload's data: cancels an uncommitted writer (S3 multipart parts), then the whole upload folder. */
  async remove(repo: string, id: string, state?: WriterState): Promise<void> {
    await this.cancelWriter(repo, id, state);
    await deleteIfPresent(this.driver, paths.uploadDir(repo, id));
  }

  /**
   * Removes what a completed upload left in its folder as {@link remove} does, except the folder itself: on the
   * filesystem driver it is renamed to a new random id and kept for the next upload of `repo` ({@link start}); one
   * not kept is removed after this returns, and {@link settle} waits for that.
   *
   * Removing a directory is the one step of an upload that can take seconds. On ext4 mounted with `discard` (as
   * cloud images mount it), `rmdir` frees the folder's block with a synchronous discard, and right after a large
   * write the device answers that only once the write is on the disk: 1.1-4.3 s in about one try in ten here (the
   * kernel stack: vfs_rmdir, ext4_free_blocks, blkdev_issue_discard), while it holds the lock of `_uploads`, so the
   * next upload's folder in the same repository waited behind it too. Removing files, renaming and creating never
   * took over a millisecond in the same runs.
   */
  async finish(repo: string, id: string, state?: WriterState): Promise<void> {
    await this.cancelWriter(repo, id, state);
    const dir = paths.uploadDir(repo, id);
    for (const entry of await listOrEmpty(this.driver, dir)) await deleteIfPresent(this.driver, entry);
    this.expire(repo);
    let left = dir;
    if (this.recycles && this.hasRoom(repo)) {
      const spare = randomUUID();
      const renamed = paths.uploadDir(repo, spare);
      // A failed rename: removed meanwhile (the repository deleted); the removal below finds nothing.
      if (
        await this.driver.move(dir, renamed).then(
          () => true,
          () => false,
        )
      ) {
        // Completions run concurrently: the room is looked at again once the folder is renamed.
        if (this.hasRoom(repo)) {
          const spares = this.spares.get(repo) ?? [];
          spares.push({ id: spare, at: Date.now() });
          this.spares.set(repo, spares);
          this.spareCount++;
          return;
        }
        left = renamed;
      }
    }
    this.removeLater(left);
  }

  /** True while another folder of `repo` may be kept. */
  private hasRoom(repo: string): boolean {
    return (this.spares.get(repo)?.length ?? 0) < SPARES_PER_REPOSITORY && this.spareCount < SPARES;
  }

  /** Cancels a writer that was never committed (S3 multipart parts); nothing for a committed state or none. */
  private async cancelWriter(repo: string, id: string, state: WriterState | undefined): Promise<void> {
    if (!state || isCommitted(state)) return;
    try {
      await (await this.writer(repo, id, state)).cancel();
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  /**
   * The uploads of `repo` that have anything in storage (sessions may be gone): each id with its folder, which the
   * stale-upload checks (src/uploads/stale-uploads.ts, shared with gc) take as is.
   */
  async list(repo: string): Promise<Array<{ id: string; dir: string }>> {
    return (await listOrEmpty(this.driver, paths.uploadsDir(repo))).map((dir) => ({ id: basename(dir), dir }));
  }
}

/**
 * The writer state of upload data already committed at the upload path (during a completion that then failed):
 * it is read and moved as is, never resumed by a driver writer.
 */
export function committedState(size: number): WriterState {
  return { size, committed: true };
}

/** True for a state made by {@link committedState}. */
export function isCommitted(state: WriterState): boolean {
  return state.committed === true;
}
