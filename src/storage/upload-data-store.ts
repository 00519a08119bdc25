import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { isNotFound, type FileWriter, type StorageDriver, type WriterState } from './driver.js';
import { listOrEmpty } from './driver-utils.js';
import { basename, paths } from './paths.js';
import type { RegistryStore } from './registry-store.js';

/**
 * The bytes of blob uploads, under `repositories/<name>/_uploads/<id>/` (see the tree in paths.ts): `data`, written
 * through driver writers across requests, and `startedat`, read by upload purging (registry:2's and berth's).
 * The upload service keeps sessions and digests; every storage path of an upload is built here.
 */
export class UploadDataStore {
  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: Pick<RegistryStore, 'blobSize' | 'linkBlob'>,
  ) {}

  /** Records when an upload started (RFC 3339, as registry:2 writes it). */
  async recordStart(repo: string, id: string, startedAt: Date): Promise<void> {
    await this.driver.putContent(paths.uploadStartedAt(repo, id), Buffer.from(startedAt.toISOString()));
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
    if (state && !isCommitted(state)) {
      try {
        await (await this.writer(repo, id, state)).cancel();
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    await this.driver.delete(paths.uploadDir(repo, id)).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
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
