import { createHash, randomBytes } from 'node:crypto';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { addAbortSignal, Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
  type ObjectCannedACL,
  type PutObjectCommandInput,
  type S3ClientConfig,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { RawSection } from '../../config/fields.js';
import { BackendUnavailableError } from '../../errors/registry-error.js';
import {
  assertDriverPath,
  InvalidOffsetError,
  PathNotFoundError,
  type FileInfo,
  type FileWriter,
  type SignalOption,
  type StorageDriver,
  type WalkOptions,
  type WriterState,
} from '../driver.js';
import { MAX_SINGLE_OBJECT, MIN_PART_SIZE, parseS3Config, type S3DriverOptions } from './s3-config.js';

export { parseS3Config, type S3DriverOptions } from './s3-config.js';

/**
 * Marks the side objects that hold a writer's tail between requests: `<key>.berth-tail-<parts>-<random>`. They live
 * next to the upload's data key (so deleting the upload directory removes them) and are hidden from `list`.
 */
const TAIL_MARKER = '.berth-tail-';
/** "Each request can contain a list of up to 1000 keys" (DeleteObjects). */
const DELETE_BATCH = 1000;
/** "Part numbers can be any number from 1 to 10,000". */
const MAX_PARTS = 10000;
/** Times a download is resumed after the connection broke mid-body. */
const READ_RESUMES = 3;

/** One uploaded part of a multipart upload, as the writer state records it. */
export interface S3PartRecord {
  n: number;
  etag: string;
  size: number;
}

/**
 * What {@link S3Writer.close} returns: everything another process needs to continue the upload. The bytes are, in
 * order, the recorded parts of multipart upload `uploadId` followed by the bytes of the `tail` object (less than
 * 5 MiB, S3's minimum part size, so it cannot be a part that later parts follow).
 */
export interface S3WriterState extends WriterState {
  driver: 's3';
  key: string;
  uploadId?: string;
  parts: S3PartRecord[];
  tail?: { key: string; size: number };
}

/** Encryption, storage class and ACL: what every new object (put, multipart, copy) is created with. */
type NewObjectParams = Pick<PutObjectCommandInput, 'ServerSideEncryption' | 'SSEKMSKeyId' | 'StorageClass' | 'ACL'>;

interface S3ErrorShape {
  name?: string;
  code?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

function errorShape(err: unknown): S3ErrorShape {
  return typeof err === 'object' && err !== null ? (err as S3ErrorShape) : {};
}

function statusOf(err: unknown): number | undefined {
  return errorShape(err).$metadata?.httpStatusCode;
}

function errorName(err: unknown): string {
  const e = errorShape(err);
  return e.name ?? e.Code ?? e.code ?? '';
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
]);
const UNAVAILABLE_NAMES = new Set([
  'SlowDown',
  'ServiceUnavailable',
  'InternalError',
  'RequestTimeout',
  'Throttling',
  'ThrottlingException',
  'TimeoutError',
  'RequestTimeoutException',
  'ServiceUnavailableException',
]);

/** True when S3 (or the network to it) failed, as opposed to S3 refusing the request. */
export function isS3Unavailable(err: unknown): boolean {
  const status = statusOf(err);
  if (status !== undefined && status >= 500) return true;
  const name = errorName(err);
  if (UNAVAILABLE_NAMES.has(name)) return true;
  const code = errorShape(err).code;
  if (code !== undefined && NETWORK_CODES.has(code)) return true;
  if (status === undefined && /socket hang up|aborted|ECONNRESET|ECONNREFUSED|EPIPE|timed? ?out/i.test(errorShape(err).message ?? '')) return true;
  return false;
}

function isNoSuchKey(err: unknown): boolean {
  const name = errorName(err);
  return name === 'NoSuchKey' || name === 'NotFound' || (statusOf(err) === 404 && name !== 'NoSuchBucket' && name !== 'NoSuchUpload');
}

function isNoSuchUpload(err: unknown): boolean {
  return errorName(err) === 'NoSuchUpload';
}

/** Turns an outage into {@link BackendUnavailableError}; other errors pass unchanged. */
function translate(err: unknown): unknown {
  if (err instanceof BackendUnavailableError || err instanceof PathNotFoundError || err instanceof InvalidOffsetError) return err;
  if (isS3Unavailable(err)) return new BackendUnavailableError('s3', { cause: err });
  return err;
}

function md5Base64(data: Buffer): string {
  return createHash('md5').update(data).digest('base64');
}

/** `CopySource` wants `bucket/key` URL-encoded (slashes kept). */
function copySource(bucket: string, key: string): string {
  return `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
}

/**
 * The S3 driver: keys laid out exactly as Distribution's S3 driver lays them out (`rootdirectory` + driver path), so
 * berth serves a bucket registry:2 filled and the other way round.
 *
 * - Writers stream into a multipart upload, up to `multipartuploadmaxconcurrency` parts in flight while the next
 *   fills, so at most that many + 1 parts (`chunksize` each) in memory (see {@link S3Writer}). Between requests a
 *   tail smaller than S3's 5 MiB minimum part lives in a small side object (see {@link S3WriterState}); the next
 *   writer, in any process, reads it back and continues. `commit` completes the multipart upload (or, below one
 *   part, puts a single object), so the object appears atomically.
 * - `move` is a server-side copy (multipart UploadPartCopy above `multipartcopythresholdsize`) plus a delete.
 * - S3 5xx, SlowDown and broken connections are retried with exponential back-off by the SDK's standard retry
 *   strategy (every request body the driver sends is a Buffer, so retries resend exactly the same bytes); broken
 *   downloads resume from the last byte received, pinned to the object's ETag. When S3 stays down the driver throws
 *   {@link BackendUnavailableError}.
 */
export class S3Driver implements StorageDriver {
  readonly name = 's3';
  /** The SDK client (exposed for tests and the readiness probe). */
  readonly client: S3Client;
  readonly options: S3DriverOptions;
  private readonly agents: Array<HttpAgent | HttpsAgent>;

  constructor(options: S3DriverOptions) {
    this.options = options;
    const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 128 });
    const httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 128, rejectUnauthorized: !options.skipVerify });
    this.agents = [httpAgent, httpsAgent];
    const config: S3ClientConfig = {
      region: options.region,
      forcePathStyle: options.forcePathStyle,
      useDualstackEndpoint: options.useDualstack,
      useAccelerateEndpoint: options.accelerate,
      maxAttempts: options.maxAttempts,
      retryMode: 'standard',
      // Content-MD5 on every upload instead of the SDK's newer CRC trailers: S3-compatible stores (MinIO, Ceph,
      // R2) all check it, and it keeps bodies plain (no aws-chunked framing).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: { httpAgent, httpsAgent, connectionTimeout: options.connectTimeoutMs, requestTimeout: options.requestTimeoutMs },
    };
    if (options.endpoint) config.endpoint = options.endpoint;
    if (options.credentials) config.credentials = options.credentials;
    if (options.userAgent) config.customUserAgent = options.userAgent;
    this.client = new S3Client(config);
  }

  /** How long presigned redirect URLs should live (`redirectexpiry`); pass it to {@link redirectURL}. */
  get redirectExpirySeconds(): number {
    return this.options.redirectExpirySeconds;
  }

  /** The object key of a driver path: `rootdirectory` + path, without a leading slash (Distribution's `s3Path`). */
  key(path: string): string {
    assertDriverPath(path);
    const root = this.options.rootDirectory;
    if (path === '/') return root;
    return root === '' ? path.slice(1) : `${root}${path}`;
  }

  /** The driver path of an object key under the root. */
  private pathOf(key: string): string {
    const root = this.options.rootDirectory;
    return root === '' ? `/${key}` : key.slice(root.length);
  }

  /** Key prefix of everything inside a directory. */
  private dirPrefix(path: string): string {
    const key = this.key(path);
    return key === '' ? '' : `${key}/`;
  }

  /** Parameters every new object gets: encryption, storage class, ACL. */
  newObjectParams(): NewObjectParams {
    const o = this.options;
    const params: NewObjectParams = {};
    if (o.serverSideEncryption) params.ServerSideEncryption = o.serverSideEncryption;
    if (o.keyId) params.SSEKMSKeyId = o.keyId;
    // The SDK types list AWS's values; S3-compatible stores accept others, so the configured string is passed on.
    if (o.storageClass) params.StorageClass = o.storageClass as StorageClass;
    if (o.objectAcl) params.ACL = o.objectAcl as ObjectCannedACL;
    return params;
  }

  /** Runs one SDK call, translating outages; an aborted `signal` rejects with its reason, not as an outage. */
  async send<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted();
    try {
      return await fn();
    } catch (err) {
      signal?.throwIfAborted();
      throw translate(err);
    }
  }

  async getContent(path: string): Promise<Buffer> {
    const key = this.key(path);
    for (let attempt = 1; ; attempt++) {
      let body;
      try {
        body = (await this.client.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: key }))).Body;
      } catch (err) {
        if (isNoSuchKey(err)) throw new PathNotFoundError(path);
        throw translate(err);
      }
      if (!body) return Buffer.alloc(0);
      try {
        return Buffer.from(await body.transformToByteArray());
      } catch (err) {
        // The SDK retries requests, not bodies: a body that breaks off mid-way is fetched again here.
        if (attempt >= this.options.maxAttempts) throw new BackendUnavailableError('s3', { cause: err });
        await sleep(100 * 2 ** attempt);
      }
    }
  }

  async putContent(path: string, content: Buffer): Promise<void> {
    const key = this.key(path);
    await this.send(() =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.options.bucket,
          Key: key,
          Body: content,
          ContentLength: content.length,
          ContentMD5: md5Base64(content),
          ContentType: 'application/octet-stream',
          ...this.newObjectParams(),
        }),
      ),
    );
  }

  /** Size and ETag of an object, or null when there is none. */
  private async head(key: string): Promise<{ size: number; etag: string; modTime: Date } | null> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: key }));
      return { size: out.ContentLength ?? 0, etag: out.ETag ?? '', modTime: out.LastModified ?? new Date(0) };
    } catch (err) {
      if (isNoSuchKey(err)) return null;
      throw translate(err);
    }
  }

  /**
   * One ranged GET. Returns null when `offset` is exactly the end of the object (nothing to read); throws
   * InvalidOffsetError past the end.
   */
  private async openRange(
    path: string,
    key: string,
    offset: number,
    length: number | undefined,
    etag: string | undefined,
    signal?: AbortSignal,
  ): Promise<{ body: Readable; bytes: number; etag: string } | null> {
    const range = offset === 0 && length === undefined ? undefined : `bytes=${offset}-${length === undefined ? '' : offset + length - 1}`;
    try {
      signal?.throwIfAborted();
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: key, Range: range, IfMatch: etag }), {
        abortSignal: signal,
      });
      const body = out.Body;
      if (!(body instanceof Readable)) throw new Error('S3 GetObject returned no stream');
      return { body, bytes: out.ContentLength ?? 0, etag: out.ETag ?? '' };
    } catch (err) {
      signal?.throwIfAborted();
      if (isNoSuchKey(err)) throw new PathNotFoundError(path);
      if (statusOf(err) === 416 || errorName(err) === 'InvalidRange') {
        // S3 answers 416 for a range starting at (or past) the end; only past the end is an error.
        const info = await this.head(key);
        if (!info) throw new PathNotFoundError(path);
        if (offset > info.size) throw new InvalidOffsetError(path, offset);
        return null;
      }
      throw translate(err);
    }
  }

  async reader(path: string, offset = 0, length?: number, options: SignalOption = {}): Promise<Readable> {
    const stream = await this.openReader(path, offset, length, options.signal);
    return options.signal ? addAbortSignal(options.signal, stream) : stream;
  }

  private async openReader(path: string, offset: number, length: number | undefined, signal: AbortSignal | undefined): Promise<Readable> {
    signal?.throwIfAborted();
    const key = this.key(path);
    if (offset < 0 || !Number.isSafeInteger(offset)) throw new InvalidOffsetError(path, offset);
    if (length === 0) {
      const info = await this.head(key);
      if (!info) throw new PathNotFoundError(path);
      if (offset > info.size) throw new InvalidOffsetError(path, offset);
      return Readable.from([]);
    }
    const first = await this.openRange(path, key, offset, length, undefined, signal);
    if (!first) return Readable.from([]);
    const end = offset + first.bytes;
    const etag = first.etag;
    const reopen = (position: number) => this.openRange(path, key, position, end - position, etag || undefined, signal);
    const firstBody = first.body;
    async function* resumable(): AsyncGenerator<Buffer> {
      let body: Readable = firstBody;
      let position = offset;
      let resumes = 0;
      try {
        for (;;) {
          try {
            for await (const chunk of body as AsyncIterable<Buffer>) {
              position += chunk.length;
              yield chunk;
            }
            if (position >= end) return;
            throw new Error(`S3 body ended after ${position - offset} of ${end - offset} bytes`);
          } catch (err) {
            body.destroy();
            signal?.throwIfAborted();
            // Resume after a broken connection, from the byte we got to, only while the object is unchanged
            // (If-Match on the first response's ETag).
            if (resumes >= READ_RESUMES) throw new BackendUnavailableError('s3', { cause: err });
            resumes += 1;
            await sleep(100 * 2 ** resumes);
            const next = await reopen(position);
            if (!next) return;
            body = next.body;
          }
        }
      } finally {
        body.destroy();
      }
    }
    return Readable.from(resumable(), { objectMode: false, highWaterMark: 1024 * 1024 });
  }

  async writer(path: string, state?: WriterState): Promise<FileWriter> {
    const key = this.key(path);
    if (!state) return new S3Writer(this, key, undefined, []);
    const s = parseWriterState(state, key);
    if (!s) throw new InvalidOffsetError(path, state.size);
    let tail: Buffer | undefined;
    if (s.tail) {
      try {
        tail = await this.getContent(this.pathOf(s.tail.key));
      } catch (err) {
        if (err instanceof PathNotFoundError) throw new PathNotFoundError(path);
        throw err;
      }
      if (tail.length !== s.tail.size) throw new InvalidOffsetError(path, state.size);
    }
    return new S3Writer(this, key, s, s.parts, tail);
  }

  async stat(path: string): Promise<FileInfo> {
    const key = this.key(path);
    if (path !== '/') {
      const info = await this.head(key);
      if (info) return { path, size: info.size, modTime: info.modTime, isDir: false };
    }
    const out = await this.send(() =>
      this.client.send(new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: this.dirPrefix(path), MaxKeys: 1 })),
    );
    if ((out.KeyCount ?? out.Contents?.length ?? 0) > 0 || path === '/') return { path, size: 0, modTime: new Date(), isDir: true };
    throw new PathNotFoundError(path);
  }

  async list(path: string, options: SignalOption = {}): Promise<string[]> {
    const signal = options.signal;
    const prefix = this.dirPrefix(path);
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.send(
        () =>
          this.client.send(new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: prefix, Delimiter: '/', ContinuationToken: token }), {
            abortSignal: signal,
          }),
        signal,
      );
      for (const p of page.CommonPrefixes ?? []) {
        if (p.Prefix) out.push(this.pathOf(p.Prefix.slice(0, -1)));
      }
      for (const o of page.Contents ?? []) {
        if (!o.Key || o.Key === prefix || o.Key.includes(TAIL_MARKER)) continue;
        out.push(this.pathOf(o.Key));
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    if (out.length === 0 && path !== '/') throw new PathNotFoundError(path);
    return out;
  }

  /**
   * Key listing (ListObjectsV2 without a delimiter, StartAfter for `startAfter`): directories are implied by the keys,
   * so the walk costs one LIST per 1000 keys and never a HEAD. When a page ends inside a skipped directory the next
   * LIST starts after that directory instead of continuing through it.
   */
  async *walk(path: string, options: WalkOptions = {}): AsyncGenerator<FileInfo> {
    const { signal, skip } = options;
    const bucket = this.options.bucket;
    const prefix = this.dirPrefix(path);
    const root = this.options.rootDirectory;
    let after = options.startAfter;
    if (after !== undefined && !after.startsWith('/')) {
      if (after > '/') return;
      after = undefined;
    }
    const startKey = after === undefined ? undefined : root === '' ? after.slice(1) : `${root}${after}`;
    let listAfter = startKey !== undefined && startKey > prefix ? startKey : undefined;
    let token: string | undefined;
    let previous: string | undefined;
    let skipped: string | undefined;
    let seen = false;
    for (;;) {
      const page = await this.send(
        () =>
          this.client.send(
            new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, StartAfter: token ? undefined : listAfter, ContinuationToken: token }),
            { abortSignal: signal },
          ),
        signal,
      );
      let last: string | undefined;
      for (const o of page.Contents ?? []) {
        const k = o.Key;
        if (!k) continue;
        last = k;
        seen = true;
        if (skipped !== undefined && k.startsWith(skipped)) continue;
        skipped = undefined;
        const parts = k.slice(prefix.length).split('/');
        if (k.includes(TAIL_MARKER) || !parts.every(isDriverName)) continue;
        let dirKey = prefix;
        let skipHere = false;
        for (const part of parts.slice(0, -1)) {
          dirKey += `${part}/`;
          if (previous !== undefined && previous.startsWith(dirKey)) continue;
          const info: FileInfo = { path: this.pathOf(dirKey.slice(0, -1)), size: 0, modTime: new Date(0), isDir: true };
          if (startKey === undefined || dirKey > startKey) {
            signal?.throwIfAborted();
            yield info;
          }
          if (skip?.(info)) {
            skipped = dirKey;
            skipHere = true;
            break;
          }
        }
        previous = k;
        if (skipHere) continue;
        signal?.throwIfAborted();
        yield { path: this.pathOf(k), size: o.Size ?? 0, modTime: o.LastModified ?? new Date(0), isDir: false };
      }
      if (!page.IsTruncated) break;
      if (skipped !== undefined && last !== undefined && last.startsWith(skipped)) {
        // Jump over the rest of the skipped directory rather than listing it.
        token = undefined;
        listAfter = `${skipped}\u{10FFFF}`;
      } else {
        token = page.NextContinuationToken;
      }
    }
    if (!seen && path !== '/') {
      const out = await this.send(
        () => this.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, MaxKeys: 1 }), { abortSignal: signal }),
        signal,
      );
      if ((out.KeyCount ?? out.Contents?.length ?? 0) === 0) throw new PathNotFoundError(path);
    }
  }

  async move(source: string, dest: string, options: SignalOption = {}): Promise<void> {
    const signal = options.signal;
    signal?.throwIfAborted();
    const from = this.key(source);
    const to = this.key(dest);
    const info = await this.head(from);
    if (!info) throw new PathNotFoundError(source);
    if (info.size > this.options.multipartCopyThresholdSize || info.size > MAX_SINGLE_OBJECT) {
      await this.multipartCopy(from, to, info.size, signal);
    } else {
      try {
        await this.client.send(
          new CopyObjectCommand({
            Bucket: this.options.bucket,
            Key: to,
            CopySource: copySource(this.options.bucket, from),
            ...this.newObjectParams(),
          }),
          { abortSignal: signal },
        );
      } catch (err) {
        signal?.throwIfAborted();
        if (isNoSuchKey(err)) throw new PathNotFoundError(source);
        throw translate(err);
      }
    }
    await this.send(() => this.client.send(new DeleteObjectCommand({ Bucket: this.options.bucket, Key: from })));
  }

  /** Server-side copy in parts (S3 copies at most 5 GiB in one CopyObject); the destination appears at Complete. */
  private async multipartCopy(from: string, to: string, size: number, signal?: AbortSignal): Promise<void> {
    const bucket = this.options.bucket;
    const partSize = Math.max(this.options.multipartCopyChunkSize, Math.ceil(size / MAX_PARTS));
    const count = Math.max(1, Math.ceil(size / partSize));
    const created = await this.send(() => this.client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: to, ...this.newObjectParams() })));
    const uploadId = created.UploadId as string;
    const etags: string[] = new Array<string>(count);
    try {
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < count) {
          signal?.throwIfAborted();
          const i = next++;
          const first = i * partSize;
          const last = Math.min(size, first + partSize) - 1;
          const out = await this.send(
            () =>
              this.client.send(
                new UploadPartCopyCommand({
                  Bucket: bucket,
                  Key: to,
                  UploadId: uploadId,
                  PartNumber: i + 1,
                  CopySource: copySource(bucket, from),
                  CopySourceRange: `bytes=${first}-${last}`,
                }),
                { abortSignal: signal },
              ),
            signal,
          );
          etags[i] = out.CopyPartResult?.ETag ?? '';
        }
      };
      await Promise.all(Array.from({ length: Math.min(count, this.options.multipartCopyMaxConcurrency) }, worker));
      await this.send(() =>
        this.client.send(
          new CompleteMultipartUploadCommand({
            Bucket: bucket,
            Key: to,
            UploadId: uploadId,
            MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
          }),
        ),
      );
    } catch (err) {
      await this.abortQuietly(to, uploadId);
      signal?.throwIfAborted();
      throw translate(err);
    }
  }

  /**
   * Deletes the object at `path` and every object under `path/` (batched DeleteObjects), and aborts multipart
   * uploads there (an expired upload's parts would otherwise be billed forever).
   */
  async delete(path: string): Promise<void> {
    const key = this.key(path);
    const bucket = this.options.bucket;
    const prefix = this.dirPrefix(path);
    const inside = (k: string): boolean =>
      path === '/' ? k.startsWith(prefix) : k === key || k.startsWith(prefix) || k.startsWith(`${key}${TAIL_MARKER}`);
    let found = 0;
    let token: string | undefined;
    do {
      const page = await this.send(() =>
        this.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: path === '/' ? prefix : key, ContinuationToken: token })),
      );
      const keys = (page.Contents ?? []).map((o) => o.Key ?? '').filter(inside);
      for (let i = 0; i < keys.length; i += DELETE_BATCH) {
        const batch = keys.slice(i, i + DELETE_BATCH);
        const out = await this.send(() =>
          this.client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } })),
        );
        const failed = out.Errors ?? [];
        if (failed.length > 0) {
          const e = failed[0];
          throw new Error(`S3 DeleteObjects failed for ${failed.length} keys (${e?.Code ?? 'error'}: ${e?.Message ?? ''})`);
        }
      }
      found += keys.length;
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    try {
      found += await this.abortUploadsUnder(path === '/' ? prefix : key, inside);
    } catch (err) {
      // A store without ListMultipartUploads: the objects are gone, which is what delete promises.
      if (statusOf(err instanceof BackendUnavailableError ? err.cause : err) !== 501) throw err;
    }
    if (found === 0) throw new PathNotFoundError(path);
  }

  /** Aborts the multipart uploads whose key passes `filter` (optionally only those started before `before`). */
  private async abortUploadsUnder(prefix: string, filter: (key: string) => boolean, before?: Date): Promise<number> {
    let count = 0;
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    for (;;) {
      const page = await this.send(() =>
        this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.options.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: idMarker }),
        ),
      );
      for (const u of page.Uploads ?? []) {
        if (!u.Key || !u.UploadId || !filter(u.Key)) continue;
        if (before && u.Initiated && u.Initiated >= before) continue;
        await this.abortQuietly(u.Key, u.UploadId);
        count += 1;
      }
      if (!page.IsTruncated) return count;
      keyMarker = page.NextKeyMarker;
      idMarker = page.NextUploadIdMarker;
    }
  }

  /**
   * The sweeper's half in S3: aborts every multipart upload under the root started before `before` (uploads whose
   * writer crashed and whose session expired). Returns how many it aborted.
   */
  async abortStaleUploads(before: Date): Promise<number> {
    const prefix = this.dirPrefix('/');
    return this.abortUploadsUnder(prefix, () => true, before);
  }

  /** Aborts a multipart upload; one that no longer exists is fine. */
  async abortQuietly(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.options.bucket, Key: key, UploadId: uploadId }));
    } catch (err) {
      if (isNoSuchUpload(err) || isNoSuchKey(err)) return;
      throw translate(err);
    }
  }

  /** Deletes objects by key, ignoring failures (best-effort cleanup of side objects). */
  async deleteKeysQuietly(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      try {
        await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.options.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
        );
      } catch {
        // Left for the upload purger, which deletes the whole upload directory.
      }
    }
  }

  /** Keys of every tail side object of `key` (including those of crashed writers). */
  async tailKeys(key: string): Promise<string[]> {
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.send(() =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: `${key}${TAIL_MARKER}`, ContinuationToken: token })),
      );
      for (const o of page.Contents ?? []) if (o.Key) out.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async redirectURL(path: string, options: { method: 'GET' | 'HEAD'; expiresInSeconds: number }): Promise<string | null> {
    const key = this.key(path);
    // "X-Amz-Expires … minimum value you can set is 1, and the maximum is 604800 (seven days)."
    const expiresIn = Math.min(604800, Math.max(1, Math.round(options.expiresInSeconds)));
    const input = { Bucket: this.options.bucket, Key: key };
    const command = options.method === 'HEAD' ? new HeadObjectCommand(input) : new GetObjectCommand(input);
    return this.send(() => getSignedUrl(this.client, command, { expiresIn }));
  }

  /** HeadBucket within a 5 s budget (a readiness probe must answer even when the network swallows packets). */
  async health(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.options.bucket }), { abortSignal: AbortSignal.timeout(5000) });
    } catch (err) {
      throw new BackendUnavailableError('s3', { cause: err });
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
    for (const a of this.agents) a.destroy();
  }
}

const DRIVER_NAME = /^[A-Za-z0-9._-]+$/;

/** True when a key component can be a driver path component (see assertDriverPath). */
function isDriverName(name: string): boolean {
  return DRIVER_NAME.test(name) && name !== '.' && name !== '..';
}

/** `<key>.berth-tail-<size, 15 digits>-<random>`: the tail that completes an upload of `size` bytes. */
function tailKey(key: string, size: number): string {
  return `${key}${TAIL_MARKER}${String(size).padStart(15, '0')}-${randomBytes(6).toString('hex')}`;
}

/** The upload size a tail key records, or undefined for a key not made by {@link tailKey}. */
function tailSizeOf(key: string): number | undefined {
  const m = /\.berth-tail-(\d{15})-[0-9a-f]+$/.exec(key);
  return m ? Number(m[1]) : undefined;
}

/** Validates a state from the session store; null when it does not describe an S3 upload of `key`. */
function parseWriterState(state: WriterState, key: string): S3WriterState | null {
  const s = state as Partial<S3WriterState>;
  if (s.driver !== 's3' || s.key !== key || !Array.isArray(s.parts) || !Number.isSafeInteger(s.size)) return null;
  let total = 0;
  let previous = 0;
  for (const p of s.parts) {
    if (
      typeof p !== 'object' ||
      p === null ||
      !Number.isInteger(p.n) ||
      p.n !== previous + 1 ||
      typeof p.etag !== 'string' ||
      !Number.isSafeInteger(p.size) ||
      p.size < MIN_PART_SIZE
    )
      return null;
    previous = p.n;
    total += p.size;
  }
  if (s.parts.length > 0 && typeof s.uploadId !== 'string') return null;
  if (s.tail !== undefined) {
    if (
      typeof s.tail !== 'object' ||
      s.tail === null ||
      typeof s.tail.key !== 'string' ||
      !s.tail.key.startsWith(`${key}${TAIL_MARKER}`) ||
      !Number.isSafeInteger(s.tail.size)
    )
      return null;
    total += s.tail.size;
  }
  if (total !== s.size) return null;
  return s as S3WriterState;
}

/**
 * Streams into a multipart upload. Bytes collect in a buffer of `chunksize`; a full buffer becomes the next part and
 * is uploaded while the next buffer fills, up to `multipartuploadmaxconcurrency` (N) parts at once. A full buffer
 * waits (and so does the `write` that filled it) while N parts are in flight, so a writer holds at most N + 1
 * buffers: (N + 1) x `chunksize`. Part numbers follow byte order whatever order the uploads finish in.
 *
 * `close`, `commit` and `cancel` first wait for every part in flight. A part that failed (after the SDK's retries)
 * fails the next `write`, `close` or `commit` with its error; nothing is committed, and `cancel` still cleans up.
 */
export class S3Writer implements FileWriter {
  /** Parts by number - 1: the resumed ones, then those this writer sent; a slot is filled when its upload succeeds. */
  private readonly parts: Array<S3PartRecord | undefined>;
  /** Part uploads in flight, by part number: promises that resolve (never reject) when the upload has ended. */
  private readonly inFlight = new Map<number, Promise<void>>();
  private readonly maxInFlight: number;
  /** Bytes of the parts in flight. */
  private inFlightBytes = 0;
  /** Buffers of parts that were uploaded, reused for the next parts (never more than N + 1 buffers in all). */
  private spare: Buffer[] = [];
  /** The first part upload that failed: every later write, close and commit throws its error. */
  private failure: { error: unknown } | undefined;
  private uploadId: string | undefined;
  private buffer: Buffer;
  private used = 0;
  /** Bytes of every part, resumed, uploaded or in flight. */
  private partsSize: number;
  private readonly resumedTail: { key: string; size: number } | undefined;
  private readonly resumedSize: number;
  private dirty = false;
  private done = false;
  /** Largest number of bytes this writer has held at once, parts in flight included (for tests of the memory bound). */
  peakBuffered = 0;

  constructor(
    private readonly driver: S3Driver,
    private readonly key: string,
    state: S3WriterState | undefined,
    parts: S3PartRecord[],
    tail?: Buffer,
  ) {
    this.parts = parts.map((p) => ({ ...p }));
    this.maxInFlight = driver.options.multipartUploadMaxConcurrency;
    this.uploadId = state?.uploadId;
    this.partsSize = parts.reduce((n, p) => n + p.size, 0);
    this.resumedTail = state?.tail;
    this.resumedSize = state?.size ?? 0;
    this.buffer = Buffer.allocUnsafe(Math.min(driver.options.chunkSize, Math.max(64 * 1024, tail?.length ?? 0)));
    if (tail) {
      tail.copy(this.buffer);
      this.used = tail.length;
    }
  }

  get size(): number {
    return this.partsSize + this.used;
  }

  /** Bytes held in memory right now: the buffer being filled and the parts in flight. */
  get buffered(): number {
    return this.used + this.inFlightBytes;
  }

  /** Resolves once the chunk is buffered and, if it filled buffers, once each of them is on its way as a part. */
  async write(chunk: Buffer): Promise<void> {
    if (this.done) throw new Error('writer is closed');
    this.throwIfFailed();
    if (chunk.length > 0) this.dirty = true;
    const chunkSize = this.driver.options.chunkSize;
    let offset = 0;
    while (offset < chunk.length) {
      if (this.used === this.buffer.length && this.buffer.length < chunkSize) this.grow(Math.min(chunkSize, this.buffer.length * 2));
      const n = Math.min(chunk.length - offset, this.buffer.length - this.used);
      chunk.copy(this.buffer, this.used, offset, offset + n);
      this.used += n;
      offset += n;
      this.peakBuffered = Math.max(this.peakBuffered, this.buffered);
      if (this.used === chunkSize) {
        // Back-pressure: the full buffer waits for a free slot, so at most N parts are in flight beside it.
        while (this.inFlight.size >= this.maxInFlight) await this.oneSettled();
        this.throwIfFailed();
        const full = this.buffer;
        await this.startPart(full.subarray(0, this.used), full);
        this.buffer = this.spare.pop() ?? Buffer.allocUnsafe(chunkSize);
      }
    }
  }

  private grow(size: number): void {
    const next = Buffer.allocUnsafe(size);
    this.buffer.copy(next, 0, 0, this.used);
    this.buffer = next;
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }

  /** Resolves when some part in flight has ended. */
  private async oneSettled(): Promise<void> {
    await Promise.race(this.inFlight.values());
  }

  /** Resolves when no part is in flight any more (each succeeded or recorded its failure). */
  private async settleAll(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all(this.inFlight.values());
  }

  private async ensureUpload(): Promise<string> {
    if (this.uploadId) return this.uploadId;
    const d = this.driver;
    const out = await d.send(() =>
      d.client.send(
        new CreateMultipartUploadCommand({
          Bucket: d.options.bucket,
          Key: this.key,
          ContentType: 'application/octet-stream',
          ...d.newObjectParams(),
        }),
      ),
    );
    if (!out.UploadId) throw new Error('S3 CreateMultipartUpload returned no UploadId');
    this.uploadId = out.UploadId;
    return out.UploadId;
  }

  /**
   * Starts uploading `data` as the next part and returns without waiting for it (only for CreateMultipartUpload before
   * the first part). The bytes move from the buffer count to the in-flight count; `owner`, the buffer `data` lies in,
   * is kept for the next part once this one is stored.
   */
  private async startPart(data: Buffer, owner?: Buffer): Promise<void> {
    if (this.parts.length + 1 > MAX_PARTS) throw new Error(`upload exceeds ${MAX_PARTS} parts of ${this.driver.options.chunkSize} bytes`);
    const uploadId = await this.ensureUpload();
    const n = this.parts.length + 1;
    const size = data.length;
    this.parts.push(undefined);
    this.partsSize += size;
    this.inFlightBytes += size;
    this.used = 0;
    const settled = this.uploadPart(uploadId, n, data).then(
      (etag) => {
        this.parts[n - 1] = { n, etag, size };
        if (owner && !this.done) this.spare.push(owner);
      },
      (err: unknown) => {
        this.failure ??= { error: err };
      },
    );
    this.inFlight.set(
      n,
      settled.finally(() => {
        this.inFlight.delete(n);
        this.inFlightBytes -= size;
      }),
    );
  }

  /** Uploads one part and returns its ETag. A Buffer body lets the SDK retry it byte for byte. */
  private async uploadPart(uploadId: string, n: number, data: Buffer): Promise<string> {
    const d = this.driver;
    const out = await d.send(() =>
      d.client.send(
        new UploadPartCommand({
          Bucket: d.options.bucket,
          Key: this.key,
          UploadId: uploadId,
          PartNumber: n,
          Body: data,
          ContentLength: data.length,
          ContentMD5: md5Base64(data),
        }),
      ),
    );
    if (!out.ETag) throw new Error('S3 UploadPart returned no ETag');
    return out.ETag;
  }

  /** Uploads what is buffered as the last part of this writer and waits for every part; throws the first failure. */
  private async flushParts(): Promise<void> {
    if (this.used > 0) await this.startPart(this.buffer.subarray(0, this.used));
    await this.settleAll();
    this.throwIfFailed();
  }

  /** The parts stored so far, in order: the run of completed parts from part 1 (all of them once settled). */
  private storedParts(): S3PartRecord[] {
    const out: S3PartRecord[] = [];
    for (const p of this.parts) {
      if (!p) break;
      out.push({ ...p });
    }
    return out;
  }

  /**
   * Waits for the parts in flight, stores what is buffered and returns the state. At least 5 MiB buffered becomes a
   * part; less becomes a new tail side object (S3 accepts a small part only as the last one, and more parts will
   * follow). The state lists only parts that were stored; a part that failed fails the close.
   *
   * Tails are named after the upload size they complete (`<key>.berth-tail-<size>-<random>`). A writer resumed from
   * a state of size S deletes the tails of sizes below S: they belong to the states S came from, which nobody
   * resumes any more. The tail of S itself stays (a writer that crashes after this close leaves S current), and so
   * does any tail above S (a concurrent or crashed writer's); commit and cancel remove them all.
   */
  async close(): Promise<S3WriterState> {
    if (this.done) throw new Error('writer is closed');
    this.done = true;
    const d = this.driver;
    let tail: { key: string; size: number } | undefined;
    try {
      await this.settleAll();
      this.throwIfFailed();
      if (!this.dirty && this.resumedTail && this.used === this.resumedTail.size) {
        tail = this.resumedTail; // nothing new: the resumed tail still holds exactly these bytes
      } else if (this.used >= MIN_PART_SIZE) {
        // The part then holds these bytes: they no longer count as buffered (nor twice in `size`).
        await this.flushParts();
      } else if (this.used > 0) {
        const data = this.buffer.subarray(0, this.used);
        const key = tailKey(this.key, this.size);
        await d.send(() =>
          d.client.send(
            new PutObjectCommand({
              Bucket: d.options.bucket,
              Key: key,
              Body: data,
              ContentLength: data.length,
              ContentMD5: md5Base64(data),
              ...d.newObjectParams(),
            }),
          ),
        );
        tail = { key, size: data.length };
      }
    } catch (err) {
      this.release();
      throw err;
    }
    const state: S3WriterState = { size: this.size, driver: 's3', key: this.key, parts: this.storedParts() };
    if (this.uploadId) state.uploadId = this.uploadId;
    if (tail) state.tail = tail;
    this.release();
    if (this.resumedSize > 0) {
      const stale = (await d.tailKeys(this.key).catch(() => [] as string[])).filter((k) => (tailSizeOf(k) ?? Infinity) < this.resumedSize);
      await d.deleteKeysQuietly(stale);
    }
    return state;
  }

  /**
   * Makes the content readable at the key, atomically: once every part is stored, CompleteMultipartUpload with the
   * buffered rest as the last part, or one PutObject when everything fits in one part.
   */
  async commit(): Promise<void> {
    if (this.done) throw new Error('writer is closed');
    this.done = true;
    const d = this.driver;
    const bucket = d.options.bucket;
    try {
      await this.settleAll();
      this.throwIfFailed();
      if (this.parts.length === 0) {
        const data = this.buffer.subarray(0, this.used);
        await d.send(() =>
          d.client.send(
            new PutObjectCommand({
              Bucket: bucket,
              Key: this.key,
              Body: data,
              ContentLength: data.length,
              ContentMD5: md5Base64(data),
              ContentType: 'application/octet-stream',
              ...d.newObjectParams(),
            }),
          ),
        );
        if (this.uploadId) await d.abortQuietly(this.key, this.uploadId);
      } else {
        // "Each part must be at least 5 MB in size, except the last part": the rest goes last, whatever its size.
        await this.flushParts();
        await this.complete();
      }
    } finally {
      this.release();
    }
    await this.removeTails();
  }

  private async complete(): Promise<void> {
    const d = this.driver;
    const uploadId = this.uploadId as string;
    const parts = this.storedParts();
    try {
      await d.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: d.options.bucket,
          Key: this.key,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.n, ETag: p.etag })) },
        }),
      );
    } catch (err) {
      // A retried Complete whose first attempt succeeded (the answer was lost) finds no upload: accept it when the
      // object is there with exactly our size.
      if (isNoSuchUpload(err)) {
        const out = await d.send(() => d.client.send(new HeadObjectCommand({ Bucket: d.options.bucket, Key: this.key }))).catch(() => null);
        if (out && out.ContentLength === this.size && (out.ETag ?? '').endsWith(`-${parts.length}"`)) return;
      }
      throw translate(err);
    }
  }

  /**
   * Waits for the parts in flight (so none is stored after the abort), then aborts the multipart upload and removes
   * tails and anything at the key.
   */
  async cancel(): Promise<void> {
    this.done = true;
    await this.settleAll();
    this.release();
    const d = this.driver;
    if (this.uploadId) await d.abortQuietly(this.key, this.uploadId);
    await d.send(() => d.client.send(new DeleteObjectCommand({ Bucket: d.options.bucket, Key: this.key })));
    await this.removeTails();
  }

  /** Deletes every tail of this key: the resumed one and any a crashed writer left. */
  private async removeTails(): Promise<void> {
    const d = this.driver;
    const keys = new Set(await d.tailKeys(this.key).catch(() => [] as string[]));
    if (this.resumedTail) keys.add(this.resumedTail.key);
    await d.deleteKeysQuietly([...keys]);
  }

  private release(): void {
    this.used = 0;
    this.buffer = Buffer.alloc(0);
    this.spare = [];
  }
}

/** Builds the S3 driver from the raw `storage.s3` section (what the app calls for `storage: {s3: …}`). */
export function createS3Driver(raw: RawSection, warn: (message: string) => void): S3Driver {
  return new S3Driver(parseS3Config(raw, warn));
}
