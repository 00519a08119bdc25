import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { registryError } from '../errors/registry-error.js';
import type { Namespace } from '../registry/repository.js';
import { warmUp, type WarmEvent, type WarmImage, type WarmPlatform } from './warm-up.js';

/** A warm-up job's state: `running`, `done` (every image fetched), `failed` (some image failed), `canceled` (shutdown). */
export type WarmJobState = 'running' | 'done' | 'failed' | 'canceled';

/** What `GET /api/v1/mirror/pulls/<id>` answers: a job's progress (see docs/api.md). */
export interface WarmJobView {
  id: string;
  state: WarmJobState;
  /** `os/arch[/variant]` when one platform was asked for, else null (every platform). */
  platform: string | null;
  createdAt: string;
  finishedAt: string | null;
  images: { total: number; done: number; failed: number };
  manifests: { done: number };
  /** `total` grows as each image's manifests are read (its configs and layers become known then). */
  blobs: { total: number; done: number };
  bytes: { total: number; done: number };
  /** Per image, in the order asked: its state and top manifest digest once known. */
  items: Array<{ image: string; state: 'pending' | 'running' | 'done' | 'failed'; digest: string | null; error?: string }>;
  errors: Array<{ image: string; message: string }>;
}

interface Job {
  view: WarmJobView;
  /** The repository names the job reads (what its progress may be shown to). */
  names: string[];
  finishedAt: number;
}

/** Options of {@link WarmUpJobs}. */
export interface WarmUpJobsOptions {
  /** At most this many jobs run at once; more are refused with TOOMANYREQUESTS. */
  maxRunning: number;
  /** Finished jobs kept for `GET` this long, and at most `keep` of them. */
  retainMs: number;
  keep: number;
  logger: Logger;
}

/** Defaults for the server: two jobs at a time, finished jobs kept an hour (at most 100). */
export const WARM_JOB_DEFAULTS = { maxRunning: 2, retainMs: 3_600_000, keep: 100 } as const;

/** At most this many images in one job. */
export const MAX_WARM_IMAGES = 100;

/**
 * Warm-up jobs of the JSON API (`POST /api/v1/mirror/pull`): each runs {@link warmUp} in the background through the
 * pull-through namespace (fills shared with clients' pulls), so a client may disconnect and come back for the
 * progress. Jobs live in this process only (a replica answers for the jobs it started).
 */
export class WarmUpJobs {
  private readonly jobs = new Map<string, Job>();
  private readonly running = new Map<string, Promise<void>>();
  private readonly abort = new AbortController();

  constructor(
    private readonly namespace: Namespace,
    private readonly options: WarmUpJobsOptions,
  ) {}

  /** Starts a job; throws TOOMANYREQUESTS (429) while `maxRunning` jobs run. */
  start(images: WarmImage[], platform: WarmPlatform | undefined): WarmJobView {
    if (this.abort.signal.aborted) throw registryError('UNAVAILABLE', undefined, { message: 'shutting down' });
    if (this.running.size >= this.options.maxRunning) {
      throw registryError(
        'TOOMANYREQUESTS',
        { running: this.running.size, max: this.options.maxRunning },
        { message: `${this.options.maxRunning} warm-up jobs are running; retry when one has finished`, headers: { 'Retry-After': '10' } },
      );
    }
    this.prune();
    const id = randomUUID();
    const view: WarmJobView = {
      id,
      state: 'running',
      platform: platform ? [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/') : null,
      createdAt: new Date().toISOString(),
      finishedAt: null,
      images: { total: images.length, done: 0, failed: 0 },
      manifests: { done: 0 },
      blobs: { total: 0, done: 0 },
      bytes: { total: 0, done: 0 },
      items: images.map((i) => ({ image: i.input, state: 'pending', digest: null })),
      errors: [],
    };
    const job: Job = { view, names: [...new Set(images.map((i) => i.name))], finishedAt: 0 };
    this.jobs.set(id, job);
    const item = (image: string) => view.items.find((i) => i.image === image && i.state !== 'done' && i.state !== 'failed');
    const onEvent = (e: WarmEvent): void => {
      const it = item(e.image);
      switch (e.kind) {
        case 'image':
          view.manifests.done++;
          if (it) {
            it.state = 'running';
            it.digest = e.digest;
          }
          break;
        case 'manifest':
          view.manifests.done++;
          break;
        case 'planned':
          view.blobs.total += e.blobs;
          view.bytes.total += e.bytes;
          break;
        case 'blob':
          view.blobs.done++;
          view.bytes.done += e.bytes;
          break;
        case 'skipped':
          break;
        case 'failed':
          view.images.failed++;
          view.errors.push({ image: e.image, message: e.error });
          if (it) {
            it.state = 'failed';
            it.error = e.error;
          }
          break;
      }
    };
    // One image at a time, so each image's end is known (warmUp reports failures, not successes).
    const run = async (): Promise<void> => {
      for (const image of images) {
        const it = item(image.input);
        if (it) it.state = 'running';
        const r = await warmUp(this.namespace, [image], { ...(platform ? { platform } : {}), onEvent, signal: this.abort.signal });
        if (r.images === 1) {
          view.images.done++;
          if (it) it.state = 'done';
        }
      }
    };
    const finished = run().then(
      () => {
        view.state = view.images.failed > 0 ? 'failed' : 'done';
      },
      (err: unknown) => {
        view.state = this.abort.signal.aborted ? 'canceled' : 'failed';
        if (!this.abort.signal.aborted) {
          this.options.logger.warn({ err, job: id }, 'warm-up job failed');
          view.errors.push({ image: '', message: (err as Error).message });
        }
      },
    );
    const done = finished.finally(() => {
      view.finishedAt = new Date().toISOString();
      job.finishedAt = Date.now();
      this.running.delete(id);
      this.options.logger.info(
        { job: id, state: view.state, images: view.images, blobs: view.blobs.done, bytes: view.bytes.done },
        'warm-up job finished',
      );
    });
    this.running.set(id, done);
    this.options.logger.info({ job: id, images: images.map((i) => i.input), platform: view.platform }, 'warm-up job started');
    return structuredClone(view);
  }

  /** A job's progress and the repositories it reads, or undefined for an unknown (or forgotten) id. */
  get(id: string): { view: WarmJobView; names: string[] } | undefined {
    this.prune();
    const job = this.jobs.get(id);
    return job ? { view: structuredClone(job.view), names: [...job.names] } : undefined;
  }

  /** Forgets finished jobs older than `retainMs`, and the oldest beyond `keep`. */
  private prune(now = Date.now()): void {
    const finished = [...this.jobs.values()].filter((j) => j.finishedAt > 0);
    const excess = finished.length - this.options.keep;
    finished.forEach((j, i) => {
      if (i < excess || now - j.finishedAt > this.options.retainMs) this.jobs.delete(j.view.id);
    });
  }

  /**
   * Cancels running jobs: no new step starts and a blob being read is let go. A job waiting for a fill to begin ends
   * when the pull-through cache closes (which aborts its fills), so call this first, then close the cache, then
   * {@link close}.
   */
  cancel(): void {
    this.abort.abort(new Error('shutting down'));
  }

  /** Cancels running jobs and waits for them to end. */
  async close(): Promise<void> {
    this.cancel();
    await Promise.all(this.running.values());
  }
}
