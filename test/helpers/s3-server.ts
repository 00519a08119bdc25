/**
 * A small, strict S3-protocol server for tests: path-style requests on 127.0.0.1, objects stored on disk in a temp
 * directory, every request authenticated with AWS Signature Version 4 (header or presigned query) against one fixed
 * test key.
 *
 * It exists because the `s3rver` package is more lenient than S3 on exactly the points the S3 driver relies on. This
 * server behaves like S3 where the driver depends on it:
 * - unsigned, badly signed, skewed and expired (presigned) requests are refused with S3's 403 errors;
 * - the `aws-chunked` framing of streamed uploads (signed chunks or unsigned with trailing checksums) is decoded and
 *   checked, never stored;
 * - a PUT is answered only once the object is completely written and verified (the body goes to a new file; the
 *   key points at it only afterwards, and a replaced file stays until its last reader is done);
 * - CompleteMultipartUpload rejects parts smaller than 5 MiB other than the last with `EntityTooSmall`;
 * - ListMultipartUploads, ListParts, AbortMultipartUpload, UploadPartCopy (with `x-amz-copy-source-range`) exist;
 * - CopyObject refuses sources above 5 GiB, as S3 does;
 * - errors are S3's XML error documents with S3's codes and statuses.
 *
 * Two hooks beyond S3: `latencyMs` delays every request (a real S3's per-request latency, for the bench), and
 * `beforeHandle` lets a test hold chosen requests (to order concurrent part uploads as it likes).
 *
 * Supported operations: CreateBucket, HeadBucket, ListObjectsV2, PutObject, GetObject (Range, If-Match), HeadObject,
 * DeleteObject, DeleteObjects, CopyObject, CreateMultipartUpload, UploadPart, UploadPartCopy,
 * CompleteMultipartUpload, AbortMultipartUpload, ListParts, ListMultipartUploads. Anything else answers 501.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, open } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform, Writable, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { crc32 } from 'node:zlib';
import { sha256Hex } from './digest.js';

/** The minimal part of a tap test the helper needs. */
export interface TeardownHost {
  teardown(fn: () => unknown): void;
}

export interface S3ServerOptions {
  bucket?: string;
  accessKey?: string;
  secretKey?: string;
  region?: string;
  /** Largest page ListObjectsV2 / ListMultipartUploads / ListParts return (S3: 1000); lower it to test paging. */
  pageSize?: number;
  /** S3's minimum size of every part but the last: 5 MiB. */
  minPartSize?: number;
  /** S3's largest CopyObject source: 5 GiB. Lower it to test multipart copies. */
  maxCopyObjectSize?: number;
  /**
   * Milliseconds every request waits before it is handled: models the per-request latency of a real S3 (tens of ms)
   * that loopback lacks. Default 0. Used by the S3 bench (BENCH_S3_LATENCY_MS).
   */
  latencyMs?: number;
  /**
   * Called for every authenticated request before it is handled (its body not yet read), with its record; the
   * request waits until the returned promise settles. Tests use it to hold chosen requests, e.g. to make part
   * uploads finish in an order they choose. A rejection answers 500 InternalError.
   */
  beforeHandle?: (request: RecordedRequest) => Promise<void> | void;
}

/** One request the server received (after authentication, or refused). */
export interface RecordedRequest {
  method: string;
  /** Decoded path, `/bucket/key`. */
  path: string;
  query: Record<string, string>;
  /** Status answered. */
  status?: number;
  /** Decoded body bytes stored (PutObject, UploadPart). */
  bytes?: number;
  /** The request's x-amz-content-sha256 (`STREAMING-…` for aws-chunked bodies). */
  payload?: string;
}

export interface S3Server {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  bucket: string;
  accessKey: string;
  secretKey: string;
  region: string;
  requests: RecordedRequest[];
  /** Shifts the server's clock (to expire presigned URLs without waiting). */
  setClockOffset(ms: number): void;
  /** Keys currently stored in the bucket, sorted. */
  keys(): string[];
  /** Multipart uploads in progress. */
  uploads(): Array<{ key: string; uploadId: string; parts: number[] }>;
  stop(): Promise<void>;
}

/**
 * The `storage.s3` config section that points berth at `server` (path style, the server's static credentials),
 * reached at `endpoint` (the server itself, or a fault proxy in front of it).
 */
export function s3StorageSection(
  server: S3Server,
  endpoint = server.endpoint,
): { bucket: string; region: string; regionendpoint: string; forcepathstyle: true; accesskey: string; secretkey: string } {
  return {
    bucket: server.bucket,
    region: server.region,
    regionendpoint: endpoint,
    forcepathstyle: true,
    accesskey: server.accessKey,
    secretkey: server.secretKey,
  };
}

/** The REGISTRY_STORAGE_S3_* variables that put a berth process's storage on `server` (as {@link s3StorageSection}). */
export function s3RegistryEnv(server: S3Server): Record<string, string> {
  return {
    REGISTRY_STORAGE_S3_BUCKET: server.bucket,
    REGISTRY_STORAGE_S3_REGION: server.region,
    REGISTRY_STORAGE_S3_REGIONENDPOINT: server.endpoint,
    REGISTRY_STORAGE_S3_FORCEPATHSTYLE: 'true',
    REGISTRY_STORAGE_S3_ACCESSKEY: server.accessKey,
    REGISTRY_STORAGE_S3_SECRETKEY: server.secretKey,
  };
}

const MiB = 1024 * 1024;
const NS = 'http://s3.amazonaws.com/doc/2006-03-01/';
const EMPTY_SHA256 = sha256Hex('');

interface StoredObject {
  file: string;
  size: number;
  etag: string;
  lastModified: Date;
  contentType: string;
  metadata: Record<string, string>;
  storageClass: string;
}

interface StoredPart {
  file: string;
  size: number;
  etag: string;
  lastModified: Date;
}

interface Upload {
  key: string;
  uploadId: string;
  initiated: Date;
  contentType: string;
  metadata: Record<string, string>;
  storageClass: string;
  parts: Map<number, StoredPart>;
}

/** An S3 error answered as `<Error>` XML. */
class S3Error extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function xmlEscape(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c] ?? c);
}

function xmlUnescape(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|amp|lt|gt|quot|apos);/g, (_, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[e] ?? '';
  });
}

/** Text contents of every `<tag>…</tag>` directly found in `xml` (the bodies S3 receives are flat enough). */
function xmlAll(xml: string, tag: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`<${tag}(?:\\s[^>]*)?>([\\s\\S]*?)</${tag}>`, 'g');
  for (let m = re.exec(xml); m; m = re.exec(xml)) out.push(m[1] ?? '');
  return out;
}

function xmlOne(xml: string, tag: string): string | undefined {
  const all = xmlAll(xml, tag);
  return all.length > 0 ? xmlUnescape((all[0] ?? '').trim()) : undefined;
}

type XmlValue = string | number | boolean | undefined | XmlNode | XmlNode[];
interface XmlNode {
  [tag: string]: XmlValue;
}

function toXml(node: XmlNode): string {
  let out = '';
  for (const [tag, value] of Object.entries(node)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) out += `<${tag}>${toXml(v)}</${tag}>`;
    else if (typeof value === 'object') out += `<${tag}>${toXml(value)}</${tag}>`;
    else out += `<${tag}>${xmlEscape(String(value))}</${tag}>`;
  }
  return out;
}

function xmlDocument(root: string, body: XmlNode): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${root} xmlns="${NS}">${toXml(body)}</${root}>`;
}

/** RFC 3986 encoding as SigV4 canonicalisation requires (unreserved characters kept, everything else %XX). */
function uriEncode(s: string, keepSlash = false): string {
  let out = '';
  for (const byte of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-._~]/.test(c) || (keepSlash && c === '/')) out += c;
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new S3Error(400, 'InvalidURI', "Couldn't parse the specified URI.");
  }
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function signingKey(secret: string, date: string, region: string): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), 's3'), 'aws4_request');
}

function sameHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/** `20260101T120000Z` → Date, or null. */
function parseAmzDate(s: string | undefined): Date | null {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s ?? '');
  if (!m) return null;
  return new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

/** What authentication established about a request, needed later to check a signed chunked body. */
interface AuthContext {
  amzDate: string;
  scope: string;
  key: Buffer;
  seedSignature: string;
  payloadHash: string;
}

/**
 * Decodes the `aws-chunked` content encoding: `<hex-size>[;chunk-signature=<sig>]\r\n<data>\r\n` … `0…\r\n`
 * then optional trailing headers and `\r\n`. Verifies chunk signatures when the payload is signed, and returns the
 * trailers for checksum checks.
 */
class AwsChunkedDecoder extends Transform {
  private state: 'header' | 'data' | 'data-crlf' | 'trailer' | 'done' = 'header';
  private line = Buffer.alloc(0);
  private remaining = 0;
  private chunkSignature: string | undefined;
  private chunkHash: Hash | undefined;
  private previousSignature: string;
  readonly trailers: Record<string, string> = {};
  private trailerLines: string[] = [];
  decoded = 0;

  constructor(
    private readonly auth: AuthContext | undefined,
    private readonly signed: boolean,
  ) {
    super();
    this.previousSignature = auth?.seedSignature ?? '';
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.consume(chunk);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    if (this.state !== 'done') cb(new S3Error(400, 'IncompleteBody', 'The request body terminated unexpectedly'));
    else cb();
  }

  private consume(buf: Buffer): void {
    let i = 0;
    while (i < buf.length) {
      if (this.state === 'data') {
        const n = Math.min(this.remaining, buf.length - i);
        const piece = buf.subarray(i, i + n);
        this.chunkHash?.update(piece);
        this.push(piece);
        this.decoded += n;
        this.remaining -= n;
        i += n;
        if (this.remaining === 0) {
          this.verifyChunk();
          this.state = 'data-crlf';
        }
        continue;
      }
      if (this.state === 'done') throw new S3Error(400, 'InvalidRequest', 'data after the final aws-chunked chunk');
      const nl = buf.indexOf(0x0a, i);
      const end = nl === -1 ? buf.length : nl + 1;
      this.line = Buffer.concat([this.line, buf.subarray(i, end)]);
      i = end;
      if (this.line.length > 8192) throw new S3Error(400, 'InvalidRequest', 'aws-chunked header line too long');
      if (nl === -1) continue;
      const text = this.line.toString('latin1');
      this.line = Buffer.alloc(0);
      if (!text.endsWith('\r\n')) throw new S3Error(400, 'InvalidRequest', 'aws-chunked lines end with CRLF');
      this.onLine(text.slice(0, -2));
    }
  }

  private onLine(text: string): void {
    if (this.state === 'data-crlf') {
      if (text !== '') throw new S3Error(400, 'InvalidRequest', 'aws-chunked chunk data not followed by CRLF');
      this.state = 'header';
      return;
    }
    if (this.state === 'trailer') {
      if (text === '') {
        this.finishTrailers();
        this.state = 'done';
        return;
      }
      const colon = text.indexOf(':');
      if (colon <= 0) throw new S3Error(400, 'InvalidRequest', 'malformed aws-chunked trailer');
      const name = text.slice(0, colon).trim().toLowerCase();
      this.trailers[name] = text.slice(colon + 1).trim();
      this.trailerLines.push(`${name}:${this.trailers[name]}`);
      return;
    }
    // Chunk header: hex size, optional ;chunk-signature=…
    const [sizeText, ...exts] = text.split(';');
    if (!/^[0-9a-fA-F]+$/.test(sizeText ?? '')) throw new S3Error(400, 'InvalidRequest', 'malformed aws-chunked size');
    const size = parseInt(sizeText ?? '0', 16);
    this.chunkSignature = undefined;
    for (const e of exts) {
      const [k, v] = e.split('=');
      if (k === 'chunk-signature') this.chunkSignature = v;
    }
    if (this.signed && !this.chunkSignature) throw new S3Error(403, 'SignatureDoesNotMatch', 'chunk signature missing');
    this.chunkHash = this.signed ? createHash('sha256') : undefined;
    if (size === 0) {
      this.verifyChunk();
      this.state = 'trailer';
      return;
    }
    this.remaining = size;
    this.state = 'data';
  }

  private verifyChunk(): void {
    if (!this.signed || !this.auth) return;
    const toSign = [
      'AWS4-HMAC-SHA256-PAYLOAD',
      this.auth.amzDate,
      this.auth.scope,
      this.previousSignature,
      EMPTY_SHA256,
      (this.chunkHash ?? createHash('sha256')).digest('hex'),
    ].join('\n');
    const expected = hmac(this.auth.key, toSign).toString('hex');
    // "Each chunk signature is computed over the previous chunk's signature" (SigV4 streaming upload).
    if (!sameHex(expected, this.chunkSignature ?? '')) {
      throw new S3Error(403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided.');
    }
    this.previousSignature = expected;
  }

  private finishTrailers(): void {
    if (!this.signed || !this.auth || this.auth.payloadHash !== 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER') return;
    const given = this.trailers['x-amz-trailer-signature'];
    const lines = this.trailerLines.filter((l) => !l.startsWith('x-amz-trailer-signature:'));
    const toSign = [
      'AWS4-HMAC-SHA256-TRAILER',
      this.auth.amzDate,
      this.auth.scope,
      this.previousSignature,
      sha256Hex(lines.map((l) => `${l}\n`).join('')),
    ].join('\n');
    if (!sameHex(hmac(this.auth.key, toSign).toString('hex'), given ?? '')) {
      throw new S3Error(403, 'SignatureDoesNotMatch', 'The trailer signature we calculated does not match the signature you provided.');
    }
  }
}

/** Hashes and counts bytes on their way through. */
class Tap extends Transform {
  readonly md5 = createHash('md5');
  readonly sha256 = createHash('sha256');
  readonly sha1 = createHash('sha1');
  crc = 0;
  bytes = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.md5.update(chunk);
    this.sha256.update(chunk);
    this.sha1.update(chunk);
    this.crc = crc32(chunk, this.crc);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

function checksumMatches(name: string, value: string, tap: Tap, sha256: Buffer, sha1: Buffer): boolean | undefined {
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(tap.crc >>> 0);
  if (name === 'x-amz-checksum-crc32') return value === crc.toString('base64');
  if (name === 'x-amz-checksum-sha256') return value === sha256.toString('base64');
  if (name === 'x-amz-checksum-sha1') return value === sha1.toString('base64');
  return undefined; // crc32c / crc64nvme: not verifiable with node:zlib; accepted.
}

/** Starts the server on a free loopback port with one empty bucket; it stops (and its files go) at teardown. */
export async function startS3Server(t: TeardownHost, opts: S3ServerOptions = {}): Promise<S3Server> {
  const bucket = opts.bucket ?? `berth-test-${randomBytes(4).toString('hex')}`;
  const accessKey = opts.accessKey ?? 'BERTHTESTACCESSKEY01';
  const secretKey = opts.secretKey ?? 'berth/test/secret/key/0123456789abcdefghij';
  const region = opts.region ?? 'us-east-1';
  const pageSize = Math.min(opts.pageSize ?? 1000, 1000);
  const minPartSize = opts.minPartSize ?? 5 * MiB;
  const maxCopyObjectSize = opts.maxCopyObjectSize ?? 5 * 1024 * MiB;
  const latencyMs = opts.latencyMs ?? 0;
  const dir = await mkdtemp(join(tmpdir(), 'berth-s3-'));
  const buckets = new Map<string, Map<string, StoredObject>>([[bucket, new Map()]]);
  const uploads = new Map<string, Upload>();
  const requests: RecordedRequest[] = [];
  let clockOffset = 0;
  const now = (): Date => new Date(Date.now() + clockOffset);
  const newFile = (): string => join(dir, randomBytes(12).toString('hex'));
  // Files being read stay until their last reader is done, so replacing an object never breaks a GET in flight.
  const pins = new Map<string, number>();
  const retired = new Set<string>();
  const pin = (file: string): void => {
    pins.set(file, (pins.get(file) ?? 0) + 1);
  };
  const unpin = (file: string): void => {
    const n = (pins.get(file) ?? 1) - 1;
    if (n > 0) {
      pins.set(file, n);
      return;
    }
    pins.delete(file);
    if (retired.delete(file)) void rm(file, { force: true });
  };
  const retire = async (file: string): Promise<void> => {
    if (pins.has(file)) retired.add(file);
    else await rm(file, { force: true });
  };

  /** Verifies SigV4 (header or presigned query); throws S3Error on any failure. */
  function authenticate(req: IncomingMessage, rawPath: string, rawQuery: string, query: URLSearchParams): AuthContext {
    const headers = new Map<string, string[]>();
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = (req.rawHeaders[i] ?? '').toLowerCase();
      const list = headers.get(name) ?? [];
      list.push((req.rawHeaders[i + 1] ?? '').trim().replace(/\s+/g, ' '));
      headers.set(name, list);
    }
    const header = (n: string): string | undefined => headers.get(n)?.join(',');
    const authz = header('authorization');
    const presigned = query.has('X-Amz-Algorithm');
    if (!authz && !presigned) throw new S3Error(403, 'AccessDenied', 'Access Denied');
    if (authz && presigned) throw new S3Error(400, 'InvalidArgument', 'Only one auth mechanism allowed');

    let credential: string;
    let signedHeaders: string;
    let signature: string;
    let amzDate: string;
    let payloadHash: string;
    if (authz) {
      const m = /^AWS4-HMAC-SHA256 (.*)$/.exec(authz);
      if (!m) throw new S3Error(400, 'InvalidArgument', 'Unsupported Authorization Type');
      const fields: Record<string, string> = {};
      for (const part of (m[1] ?? '').split(',')) {
        const eq = part.indexOf('=');
        fields[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
      }
      if (!fields.Credential || !fields.SignedHeaders || !fields.Signature) {
        throw new S3Error(400, 'AuthorizationHeaderMalformed', 'The authorization header is malformed');
      }
      credential = fields.Credential;
      signedHeaders = fields.SignedHeaders;
      signature = fields.Signature;
      amzDate = header('x-amz-date') ?? '';
      const contentSha = header('x-amz-content-sha256');
      // "The x-amz-content-sha256 header is required for all AWS Signature Version 4 requests" (S3 API reference).
      if (!contentSha) throw new S3Error(400, 'InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
      payloadHash = contentSha;
      const date = parseAmzDate(amzDate);
      if (!date) throw new S3Error(403, 'AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header');
      if (Math.abs(now().getTime() - date.getTime()) > 15 * 60_000) {
        throw new S3Error(403, 'RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.');
      }
    } else {
      if (query.get('X-Amz-Algorithm') !== 'AWS4-HMAC-SHA256') {
        throw new S3Error(400, 'AuthorizationQueryParametersError', 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"');
      }
      credential = query.get('X-Amz-Credential') ?? '';
      signedHeaders = query.get('X-Amz-SignedHeaders') ?? '';
      signature = query.get('X-Amz-Signature') ?? '';
      amzDate = query.get('X-Amz-Date') ?? '';
      const expires = Number(query.get('X-Amz-Expires') ?? 'NaN');
      const date = parseAmzDate(amzDate);
      if (!credential || !signedHeaders || !signature || !date || !Number.isInteger(expires) || expires < 0) {
        throw new S3Error(
          400,
          'AuthorizationQueryParametersError',
          'Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.',
        );
      }
      // "X-Amz-Expires must be less than a week (in seconds) that is; the maximum is 604800".
      if (expires > 604800)
        throw new S3Error(400, 'AuthorizationQueryParametersError', 'X-Amz-Expires must be less than a week (in seconds) that is; 604800 seconds');
      if (now().getTime() > date.getTime() + expires * 1000) throw new S3Error(403, 'AccessDenied', 'Request has expired');
      if (date.getTime() > now().getTime() + 15 * 60_000) throw new S3Error(403, 'AccessDenied', 'Request is not valid yet');
      payloadHash = header('x-amz-content-sha256') ?? 'UNSIGNED-PAYLOAD';
    }

    const [akid, credDate, credRegion, service, terminator] = credential.split('/');
    if (akid !== accessKey) throw new S3Error(403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
    if (credDate !== amzDate.slice(0, 8) || service !== 's3' || terminator !== 'aws4_request' || !credRegion) {
      throw new S3Error(400, 'AuthorizationHeaderMalformed', 'The authorization header is malformed; the credential is mis-scoped');
    }
    if (credRegion !== region) {
      throw new S3Error(
        400,
        'AuthorizationHeaderMalformed',
        `The authorization header is malformed; the region '${credRegion}' is wrong; expecting '${region}'`,
      );
    }
    const names = signedHeaders.split(';');
    if (!names.includes('host')) throw new S3Error(403, 'AccessDenied', 'host must be a signed header');
    if (names.join(';') !== [...names].sort().join(';')) throw new S3Error(403, 'SignatureDoesNotMatch', 'SignedHeaders must be sorted');
    for (const [name] of headers) {
      // S3 requires every x-amz-* header a request carries to be signed (header authentication).
      if (authz && name.startsWith('x-amz-') && !names.includes(name)) {
        throw new S3Error(403, 'AccessDenied', `There were headers present in the request which were not signed: ${name}`);
      }
    }
    const canonicalHeaders = names.map((n) => `${n}:${header(n) ?? ''}\n`).join('');
    const canonicalUri = rawPath
      .split('/')
      .map((seg) => uriEncode(safeDecode(seg)))
      .join('/');
    const pairs: Array<[string, string]> = [];
    for (const piece of rawQuery === '' ? [] : rawQuery.split('&')) {
      const eq = piece.indexOf('=');
      const k = safeDecode(eq === -1 ? piece : piece.slice(0, eq));
      const v = eq === -1 ? '' : safeDecode(piece.slice(eq + 1));
      if (presigned && k === 'X-Amz-Signature') continue;
      pairs.push([uriEncode(k), uriEncode(v)]);
    }
    pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    const canonicalQuery = pairs.map(([k, v]) => `${k}=${v}`).join('&');
    const canonicalRequest = [req.method, canonicalUri, canonicalQuery, canonicalHeaders, signedHeaders, payloadHash].join('\n');
    const scope = `${credDate}/${credRegion}/s3/aws4_request`;
    const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
    const key = signingKey(secretKey, credDate, credRegion);
    const expected = hmac(key, stringToSign).toString('hex');
    if (!sameHex(expected, signature)) {
      throw new S3Error(
        403,
        'SignatureDoesNotMatch',
        'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
      );
    }
    return { amzDate, scope, key, seedSignature: signature, payloadHash };
  }

  /**
   * Streams the request body (decoding aws-chunked) into a new file; verifies x-amz-content-sha256, Content-MD5 and
   * x-amz-checksum-*; returns size and MD5. The file is removed on any failure.
   */
  async function receiveBody(req: IncomingMessage, auth: AuthContext, requireLength = false): Promise<{ file: string; size: number; md5: string }> {
    const lengthHeader = req.headers['content-length'];
    const decodedHeader = req.headers['x-amz-decoded-content-length'];
    // S3 refuses uploads without a length: "411 MissingContentLength: You must provide the Content-Length HTTP
    // header." An aws-chunked body may instead travel with HTTP chunked transfer encoding when it states its
    // decoded length in x-amz-decoded-content-length (what the AWS SDKs send for streams).
    const streamedWithLength = auth.payloadHash.startsWith('STREAMING-') && typeof decodedHeader === 'string';
    if (lengthHeader === undefined && !streamedWithLength && (requireLength || req.headers['transfer-encoding'] !== undefined)) {
      throw new S3Error(411, 'MissingContentLength', 'You must provide the Content-Length HTTP header.');
    }
    const payload = auth.payloadHash;
    const streaming = payload.startsWith('STREAMING-');
    const encodings = (req.headers['content-encoding'] ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    if (
      streaming &&
      !['STREAMING-AWS4-HMAC-SHA256-PAYLOAD', 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER', 'STREAMING-UNSIGNED-PAYLOAD-TRAILER'].includes(payload)
    ) {
      throw new S3Error(400, 'InvalidArgument', `x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-… or a SHA-256 value, got ${payload}`);
    }
    if (!streaming && payload !== 'UNSIGNED-PAYLOAD' && !/^[0-9a-f]{64}$/.test(payload)) {
      throw new S3Error(400, 'InvalidArgument', 'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-… or a SHA-256 value');
    }
    let decodedLength: number | undefined;
    if (streaming) {
      const d = req.headers['x-amz-decoded-content-length'];
      if (typeof d !== 'string' || !/^\d+$/.test(d)) {
        throw new S3Error(411, 'MissingContentLength', 'You must provide the x-amz-decoded-content-length header for aws-chunked uploads.');
      }
      decodedLength = Number(d);
    } else if (encodings.includes('aws-chunked')) {
      throw new S3Error(400, 'InvalidArgument', 'Content-Encoding aws-chunked requires a STREAMING-… x-amz-content-sha256');
    }
    const file = newFile();
    const tap = new Tap();
    const decoder = streaming ? new AwsChunkedDecoder(auth, payload !== 'STREAMING-UNSIGNED-PAYLOAD-TRAILER') : undefined;
    try {
      const stages: Array<NodeJS.ReadableStream | NodeJS.WritableStream> = [req];
      if (decoder) stages.push(decoder);
      stages.push(tap, createWriteStream(file));
      await pipeline(stages as [Readable, ...Array<NodeJS.WritableStream>]);
      if (decoder && decoder.decoded !== decodedLength) {
        throw new S3Error(400, 'IncompleteBody', 'You did not provide the number of bytes specified by the x-amz-decoded-content-length HTTP header');
      }
      const sha256 = tap.sha256.digest();
      const sha1 = tap.sha1.digest();
      const md5 = tap.md5.digest();
      if (/^[0-9a-f]{64}$/.test(payload) && payload !== sha256.toString('hex')) {
        throw new S3Error(400, 'XAmzContentSHA256Mismatch', "The provided 'x-amz-content-sha256' header does not match what was computed.");
      }
      const contentMd5 = req.headers['content-md5'];
      if (typeof contentMd5 === 'string' && contentMd5 !== md5.toString('base64')) {
        throw new S3Error(400, 'BadDigest', 'The Content-MD5 you specified did not match what we received.');
      }
      const checks: Record<string, string> = { ...(decoder?.trailers ?? {}) };
      for (const [k, v] of Object.entries(req.headers))
        if (k.startsWith('x-amz-checksum-') && k !== 'x-amz-checksum-algorithm' && k !== 'x-amz-checksum-type' && typeof v === 'string')
          checks[k] = v;
      for (const [k, v] of Object.entries(checks)) {
        if (!k.startsWith('x-amz-checksum-')) continue;
        if (checksumMatches(k, v, tap, sha256, sha1) === false) {
          throw new S3Error(
            400,
            'BadDigest',
            `The ${k.slice('x-amz-checksum-'.length).toUpperCase()} you specified did not match the calculated checksum.`,
          );
        }
      }
      if (!streaming && tap.bytes !== Number(lengthHeader ?? '0'))
        throw new S3Error(400, 'IncompleteBody', 'The request body terminated unexpectedly');
      return { file, size: tap.bytes, md5: md5.toString('hex') };
    } catch (err) {
      await rm(file, { force: true });
      if (err instanceof S3Error) throw err;
      throw new S3Error(400, 'IncompleteBody', 'The request body terminated unexpectedly');
    }
  }

  async function readSmallBody(req: IncomingMessage, auth: AuthContext, limit = 8 * MiB): Promise<Buffer> {
    const { file, size } = await receiveBody(req, auth);
    try {
      if (size > limit) throw new S3Error(400, 'MaxMessageLengthExceeded', 'Your request was too big.');
      const handle = await open(file, 'r');
      try {
        return await handle.readFile();
      } finally {
        await handle.close();
      }
    } finally {
      await rm(file, { force: true });
    }
  }

  function objectHeaders(res: ServerResponse, o: StoredObject): void {
    res.setHeader('ETag', o.etag);
    res.setHeader('Last-Modified', o.lastModified.toUTCString());
    res.setHeader('Content-Type', o.contentType);
    res.setHeader('Accept-Ranges', 'bytes');
    if (o.storageClass !== 'STANDARD') res.setHeader('x-amz-storage-class', o.storageClass);
    for (const [k, v] of Object.entries(o.metadata)) res.setHeader(k, v);
  }

  function sendXml(res: ServerResponse, status: number, root: string, body: XmlNode): void {
    const text = xmlDocument(root, body);
    res.writeHead(status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  function requireObject(objects: Map<string, StoredObject>, key: string): StoredObject {
    const o = objects.get(key);
    if (!o) throw new S3Error(404, 'NoSuchKey', 'The specified key does not exist.');
    return o;
  }

  function requireUpload(uploadId: string, key: string): Upload {
    const u = uploads.get(uploadId);
    if (!u || u.key !== key) {
      throw new S3Error(
        404,
        'NoSuchUpload',
        'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
      );
    }
    return u;
  }

  function metadataFrom(req: IncomingMessage): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (k.startsWith('x-amz-meta-') && typeof v === 'string') out[k] = v;
    return out;
  }

  function storageClassFrom(req: IncomingMessage): string {
    const sc = req.headers['x-amz-storage-class'];
    if (sc === undefined) return 'STANDARD';
    const allowed = ['STANDARD', 'REDUCED_REDUNDANCY', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'GLACIER', 'DEEP_ARCHIVE', 'GLACIER_IR'];
    if (typeof sc !== 'string' || !allowed.includes(sc))
      throw new S3Error(400, 'InvalidStorageClass', 'The storage class you specified is not valid');
    return sc;
  }

  /** Parses `x-amz-copy-source` (`/bucket/key` or `bucket/key`, URL-encoded). */
  function copySource(req: IncomingMessage): StoredObject {
    const raw = req.headers['x-amz-copy-source'];
    if (typeof raw !== 'string')
      throw new S3Error(400, 'InvalidArgument', 'Copy Source must mention the source bucket and key: sourcebucket/sourcekey');
    const decoded = safeDecode(raw.split('?')[0] ?? '').replace(/^\//, '');
    const slash = decoded.indexOf('/');
    if (slash <= 0) throw new S3Error(400, 'InvalidArgument', 'Copy Source must mention the source bucket and key: sourcebucket/sourcekey');
    const objects = buckets.get(decoded.slice(0, slash));
    if (!objects) throw new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist');
    return requireObject(objects, decoded.slice(slash + 1));
  }

  async function copyRange(from: string, to: string, start: number, endInclusive: number): Promise<string> {
    const md5 = createHash('md5');
    const hashing = new Transform({
      transform(chunk: Buffer, _e, cb) {
        md5.update(chunk);
        cb(null, chunk);
      },
    });
    if (endInclusive < start) {
      const h = await open(to, 'w');
      await h.close();
      return md5.digest('hex');
    }
    pin(from);
    try {
      await pipeline(createReadStream(from, { start, end: endInclusive }), hashing, createWriteStream(to));
    } finally {
      unpin(from);
    }
    return md5.digest('hex');
  }

  async function storeObject(objects: Map<string, StoredObject>, key: string, o: StoredObject): Promise<void> {
    const old = objects.get(key);
    objects.set(key, o);
    if (old && old.file !== o.file) await retire(old.file);
  }

  function paging(query: URLSearchParams, name: string): number {
    const v = query.get(name);
    if (v === null) return pageSize;
    if (!/^\d+$/.test(v)) throw new S3Error(400, 'InvalidArgument', `Provided ${name} not an integer or within integer range`);
    return Math.min(Number(v), pageSize);
  }

  async function handle(req: IncomingMessage, res: ServerResponse, record: RecordedRequest): Promise<void> {
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const rawPath = qi === -1 ? url : url.slice(0, qi);
    const rawQuery = qi === -1 ? '' : url.slice(qi + 1);
    const query = new URLSearchParams(rawQuery);
    const path = safeDecode(rawPath);
    record.path = path;
    for (const [k, v] of query) record.query[k] = v;
    const auth = authenticate(req, rawPath, rawQuery, query);
    record.payload = auth.payloadHash;
    if (latencyMs > 0) await sleep(latencyMs);
    await opts.beforeHandle?.(record);
    const method = req.method ?? 'GET';
    const slash = path.indexOf('/', 1);
    const bucketName = slash === -1 ? path.slice(1) : path.slice(1, slash);
    const key = slash === -1 ? '' : path.slice(slash + 1);
    if (bucketName === '') throw new S3Error(501, 'NotImplemented', 'ListBuckets is not implemented by this test server');

    if (key === '' && method === 'PUT') {
      if (buckets.has(bucketName))
        throw new S3Error(409, 'BucketAlreadyOwnedByYou', 'Your previous request to create the named bucket succeeded and you already own it.');
      await readSmallBody(req, auth);
      buckets.set(bucketName, new Map());
      res.writeHead(200, { Location: `/${bucketName}` }).end();
      return;
    }
    const objects = buckets.get(bucketName);
    if (!objects) throw new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist');

    if (key === '') {
      if (method === 'HEAD') {
        res.writeHead(200, { 'x-amz-bucket-region': region }).end();
        return;
      }
      if (method === 'GET' && query.get('list-type') === '2') return listObjectsV2(res, objects, bucketName, query);
      if (method === 'GET' && query.has('uploads')) return listMultipartUploads(res, bucketName, query);
      if (method === 'POST' && query.has('delete')) return deleteObjects(req, res, auth, objects);
      throw new S3Error(501, 'NotImplemented', 'A header or query you provided implies functionality that is not implemented');
    }
    if (Buffer.byteLength(key) > 1024) throw new S3Error(400, 'KeyTooLongError', 'Your key is too long');

    if (method === 'PUT' && query.has('uploadId')) {
      const upload = requireUpload(query.get('uploadId') ?? '', key);
      const n = Number(query.get('partNumber'));
      // "Part numbers can be any number from 1 to 10,000, inclusive."
      if (!Number.isInteger(n) || n < 1 || n > 10000)
        throw new S3Error(400, 'InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive');
      if (req.headers['x-amz-copy-source'] !== undefined) return uploadPartCopy(req, res, auth, upload, n);
      const body = await receiveBody(req, auth, true);
      if (body.size > 5 * 1024 * MiB) {
        await rm(body.file, { force: true });
        throw new S3Error(400, 'EntityTooLarge', 'Your proposed upload exceeds the maximum allowed object size.');
      }
      if (!uploads.has(upload.uploadId)) {
        // Aborted or completed while the part was in flight.
        await rm(body.file, { force: true });
        throw new S3Error(404, 'NoSuchUpload', 'The specified upload does not exist.');
      }
      const old = upload.parts.get(n);
      upload.parts.set(n, { file: body.file, size: body.size, etag: `"${body.md5}"`, lastModified: now() });
      if (old) await rm(old.file, { force: true });
      record.bytes = body.size;
      res.writeHead(200, { ETag: `"${body.md5}"` }).end();
      return;
    }
    if (method === 'PUT') {
      if (req.headers['x-amz-copy-source'] !== undefined) return copyObject(req, res, auth, objects, key);
      const storageClass = storageClassFrom(req);
      const body = await receiveBody(req, auth, true);
      if (body.size > 5 * 1024 * MiB) {
        await rm(body.file, { force: true });
        throw new S3Error(400, 'EntityTooLarge', 'Your proposed upload exceeds the maximum allowed size');
      }
      const ct = req.headers['content-type'] ?? 'binary/octet-stream';
      await storeObject(objects, key, {
        file: body.file,
        size: body.size,
        etag: `"${body.md5}"`,
        lastModified: now(),
        contentType: ct,
        metadata: metadataFrom(req),
        storageClass,
      });
      record.bytes = body.size;
      res.writeHead(200, { ETag: `"${body.md5}"` }).end();
      return;
    }
    if (method === 'POST' && query.has('uploads')) {
      await readSmallBody(req, auth);
      const uploadId = randomBytes(16).toString('base64url');
      uploads.set(uploadId, {
        key,
        uploadId,
        initiated: now(),
        contentType: req.headers['content-type'] ?? 'binary/octet-stream',
        metadata: metadataFrom(req),
        storageClass: storageClassFrom(req),
        parts: new Map(),
      });
      sendXml(res, 200, 'InitiateMultipartUploadResult', { Bucket: bucketName, Key: key, UploadId: uploadId });
      return;
    }
    if (method === 'POST' && query.has('uploadId'))
      return completeMultipartUpload(req, res, auth, objects, bucketName, key, query.get('uploadId') ?? '');
    if (method === 'DELETE' && query.has('uploadId')) {
      const upload = requireUpload(query.get('uploadId') ?? '', key);
      uploads.delete(upload.uploadId);
      for (const p of upload.parts.values()) await rm(p.file, { force: true });
      res.writeHead(204).end();
      return;
    }
    if (method === 'GET' && query.has('uploadId')) return listParts(res, bucketName, key, query);
    if (method === 'DELETE') {
      const old = objects.get(key);
      objects.delete(key);
      if (old) await retire(old.file);
      res.writeHead(204).end();
      return;
    }
    if (method === 'GET' || method === 'HEAD') return getObject(req, res, objects, key, method === 'HEAD');
    throw new S3Error(405, 'MethodNotAllowed', 'The specified method is not allowed against this resource.');
  }

  function getObject(req: IncomingMessage, res: ServerResponse, objects: Map<string, StoredObject>, key: string, head: boolean): void {
    const o = requireObject(objects, key);
    const ifMatch = req.headers['if-match'];
    if (
      ifMatch !== undefined &&
      ifMatch !== '*' &&
      !ifMatch
        .split(',')
        .map((s) => s.trim())
        .includes(o.etag)
    ) {
      throw new S3Error(412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
    }
    const ifNoneMatch = req.headers['if-none-match'];
    if (
      ifNoneMatch !== undefined &&
      (ifNoneMatch === '*' ||
        ifNoneMatch
          .split(',')
          .map((s) => s.trim())
          .includes(o.etag))
    ) {
      objectHeaders(res, o);
      res.writeHead(304).end();
      return;
    }
    let start = 0;
    let end = o.size - 1;
    let partial = false;
    const range = req.headers.range;
    if (range !== undefined) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
      // S3 ignores a Range header it cannot parse and answers the whole object.
      if (m && (m[1] !== '' || m[2] !== '')) {
        if (m[1] === '') {
          const suffix = Number(m[2]);
          if (suffix === 0 || o.size === 0) throw new S3Error(416, 'InvalidRange', 'The requested range is not satisfiable');
          start = Math.max(0, o.size - suffix);
        } else {
          start = Number(m[1]);
          if (m[2] !== '') end = Math.min(Number(m[2]), o.size - 1);
          if (start >= o.size || (m[2] !== '' && Number(m[2]) < start)) {
            res.setHeader('Content-Range', `bytes */${o.size}`);
            throw new S3Error(416, 'InvalidRange', 'The requested range is not satisfiable');
          }
        }
        partial = true;
      }
    }
    objectHeaders(res, o);
    const length = o.size === 0 ? 0 : end - start + 1;
    res.setHeader('Content-Length', length);
    if (partial) res.setHeader('Content-Range', `bytes ${start}-${end}/${o.size}`);
    res.writeHead(partial ? 206 : 200);
    if (head || length === 0) {
      res.end();
      return;
    }
    pin(o.file);
    const stream = createReadStream(o.file, { start, end });
    stream.on('error', () => res.destroy());
    stream.on('close', () => unpin(o.file));
    stream.pipe(res);
  }

  function listObjectsV2(res: ServerResponse, objects: Map<string, StoredObject>, bucketName: string, query: URLSearchParams): void {
    const prefix = query.get('prefix') ?? '';
    const delimiter = query.get('delimiter') ?? '';
    const maxKeys = paging(query, 'max-keys');
    const encode = query.get('encoding-type') === 'url';
    if (query.has('encoding-type') && !encode) throw new S3Error(400, 'InvalidArgument', 'Invalid Encoding Method specified in Request');
    const token = query.get('continuation-token');
    let after = query.get('start-after') ?? '';
    if (token !== null) {
      try {
        after = Buffer.from(token, 'base64url').toString('utf8');
      } catch {
        throw new S3Error(400, 'InvalidArgument', 'The continuation token provided is incorrect');
      }
    }
    const keys = [...objects.keys()].filter((k) => k.startsWith(prefix)).sort(compareUtf8);
    const contents: XmlNode[] = [];
    const prefixes: string[] = [];
    let last = '';
    let truncated = false;
    for (const k of keys) {
      if (after !== '' && compareUtf8(k, after) <= 0) continue;
      let entry = k;
      let isPrefix = false;
      if (delimiter !== '') {
        const d = k.indexOf(delimiter, prefix.length);
        if (d !== -1) {
          entry = k.slice(0, d + delimiter.length);
          isPrefix = true;
        }
      }
      if (isPrefix && (entry === last || (after !== '' && entry === after) || (after !== '' && after.startsWith(entry)))) continue;
      if (contents.length + prefixes.length >= maxKeys) {
        truncated = true;
        break;
      }
      last = entry;
      if (isPrefix) prefixes.push(entry);
      else {
        const o = objects.get(k) as StoredObject;
        contents.push({
          Key: encode ? uriEncode(k, true) : k,
          LastModified: o.lastModified.toISOString(),
          ETag: o.etag,
          Size: o.size,
          StorageClass: o.storageClass,
        });
      }
    }
    // Skip past every key inside the last common prefix on the next page.
    const next = truncated ? (last.endsWith(delimiter) && delimiter !== '' ? `${last}\u{10FFFF}` : last) : undefined;
    sendXml(res, 200, 'ListBucketResult', {
      Name: bucketName,
      Prefix: encode ? uriEncode(prefix, true) : prefix,
      Delimiter: delimiter === '' ? undefined : encode ? uriEncode(delimiter, true) : delimiter,
      MaxKeys: maxKeys,
      EncodingType: encode ? 'url' : undefined,
      KeyCount: contents.length + prefixes.length,
      IsTruncated: truncated,
      ContinuationToken: token ?? undefined,
      NextContinuationToken: next === undefined ? undefined : Buffer.from(next, 'utf8').toString('base64url'),
      StartAfter: query.get('start-after') ?? undefined,
      Contents: contents,
      CommonPrefixes: prefixes.map((p) => ({ Prefix: encode ? uriEncode(p, true) : p })),
    });
  }

  function listMultipartUploads(res: ServerResponse, bucketName: string, query: URLSearchParams): void {
    const prefix = query.get('prefix') ?? '';
    const keyMarker = query.get('key-marker') ?? '';
    const idMarker = query.get('upload-id-marker') ?? '';
    const max = paging(query, 'max-uploads');
    const all = [...uploads.values()]
      .filter((u) => u.key.startsWith(prefix))
      .sort((a, b) => compareUtf8(a.key, b.key) || a.initiated.getTime() - b.initiated.getTime() || (a.uploadId < b.uploadId ? -1 : 1));
    let startIndex = 0;
    if (keyMarker !== '') {
      startIndex = all.findIndex((u) => compareUtf8(u.key, keyMarker) > 0 || (u.key === keyMarker && idMarker !== '' && u.uploadId === idMarker));
      if (startIndex === -1) startIndex = all.length;
      else if (all[startIndex]?.key === keyMarker && all[startIndex]?.uploadId === idMarker) startIndex += 1;
    }
    const page = all.slice(startIndex, startIndex + max);
    const truncated = startIndex + max < all.length;
    const lastUpload = page[page.length - 1];
    sendXml(res, 200, 'ListMultipartUploadsResult', {
      Bucket: bucketName,
      KeyMarker: keyMarker,
      UploadIdMarker: idMarker,
      NextKeyMarker: truncated ? lastUpload?.key : undefined,
      NextUploadIdMarker: truncated ? lastUpload?.uploadId : undefined,
      Prefix: prefix,
      MaxUploads: max,
      IsTruncated: truncated,
      Upload: page.map((u) => ({ Key: u.key, UploadId: u.uploadId, Initiated: u.initiated.toISOString(), StorageClass: u.storageClass })),
    });
  }

  function listParts(res: ServerResponse, bucketName: string, key: string, query: URLSearchParams): void {
    const upload = requireUpload(query.get('uploadId') ?? '', key);
    const marker = Number(query.get('part-number-marker') ?? '0');
    const max = paging(query, 'max-parts');
    const numbers = [...upload.parts.keys()].filter((n) => n > marker).sort((a, b) => a - b);
    const page = numbers.slice(0, max);
    const truncated = numbers.length > max;
    sendXml(res, 200, 'ListPartsResult', {
      Bucket: bucketName,
      Key: key,
      UploadId: upload.uploadId,
      PartNumberMarker: marker,
      NextPartNumberMarker: page.length > 0 ? page[page.length - 1] : undefined,
      MaxParts: max,
      IsTruncated: truncated,
      StorageClass: upload.storageClass,
      Part: page.map((n) => {
        const p = upload.parts.get(n) as StoredPart;
        return { PartNumber: n, LastModified: p.lastModified.toISOString(), ETag: p.etag, Size: p.size };
      }),
    });
  }

  async function deleteObjects(req: IncomingMessage, res: ServerResponse, auth: AuthContext, objects: Map<string, StoredObject>): Promise<void> {
    const hasChecksum = Object.keys(req.headers).some(
      (h) => h === 'content-md5' || (h.startsWith('x-amz-checksum-') && h !== 'x-amz-checksum-algorithm'),
    );
    // "The Content-MD5 or x-amz-checksum-algorithm header is required for all Multi-Object Delete requests."
    if (!hasChecksum && !(auth.payloadHash.startsWith('STREAMING-') && req.headers['x-amz-trailer'])) {
      throw new S3Error(400, 'InvalidRequest', 'Missing required header for this request: Content-MD5 OR x-amz-checksum-*');
    }
    const xml = (await readSmallBody(req, auth)).toString('utf8');
    if (!/<Delete[\s>]/.test(xml))
      throw new S3Error(400, 'MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema');
    const quiet = xmlOne(xml, 'Quiet') === 'true';
    const keys = xmlAll(xml, 'Object').map((o) => xmlOne(o, 'Key'));
    // "The request can contain a list of up to 1000 keys that you want to delete."
    if (keys.length === 0 || keys.length > 1000 || keys.some((k) => k === undefined || k === '')) {
      throw new S3Error(400, 'MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema');
    }
    const deleted: XmlNode[] = [];
    for (const k of keys as string[]) {
      const old = objects.get(k);
      objects.delete(k);
      if (old) await retire(old.file);
      if (!quiet) deleted.push({ Key: k });
    }
    sendXml(res, 200, 'DeleteResult', { Deleted: deleted });
  }

  async function copyObject(
    req: IncomingMessage,
    res: ServerResponse,
    auth: AuthContext,
    objects: Map<string, StoredObject>,
    key: string,
  ): Promise<void> {
    const src = copySource(req);
    await readSmallBody(req, auth);
    // "You can create a copy of your object up to 5 GB in size in a single atomic action using this API."
    if (src.size > maxCopyObjectSize) {
      throw new S3Error(
        400,
        'InvalidRequest',
        `The specified copy source is larger than the maximum allowable size for a copy source: ${maxCopyObjectSize}`,
      );
    }
    const directive = req.headers['x-amz-metadata-directive'] ?? 'COPY';
    const file = newFile();
    const md5 = await copyRange(src.file, file, 0, src.size - 1);
    const o: StoredObject = {
      file,
      size: src.size,
      etag: `"${md5}"`,
      lastModified: now(),
      contentType: directive === 'REPLACE' ? (req.headers['content-type'] ?? 'binary/octet-stream') : src.contentType,
      metadata: directive === 'REPLACE' ? metadataFrom(req) : { ...src.metadata },
      storageClass: storageClassFrom(req),
    };
    await storeObject(objects, key, o);
    sendXml(res, 200, 'CopyObjectResult', { ETag: o.etag, LastModified: o.lastModified.toISOString() });
  }

  async function uploadPartCopy(req: IncomingMessage, res: ServerResponse, auth: AuthContext, upload: Upload, n: number): Promise<void> {
    const src = copySource(req);
    await readSmallBody(req, auth);
    let start = 0;
    let end = src.size - 1;
    const range = req.headers['x-amz-copy-source-range'];
    if (typeof range === 'string') {
      // "The range value must use the form bytes=first-last … you can copy a range only if the source object is
      // greater than 5 MB."
      const m = /^bytes=(\d+)-(\d+)$/.exec(range);
      if (!m)
        throw new S3Error(
          400,
          'InvalidArgument',
          'The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy',
        );
      start = Number(m[1]);
      end = Number(m[2]);
      if (end < start || end >= src.size) {
        throw new S3Error(400, 'InvalidRange', `The requested range is not satisfiable`);
      }
    }
    if (end - start + 1 > 5 * 1024 * MiB) throw new S3Error(400, 'InvalidRequest', 'The specified copy range is larger than 5 GiB');
    const file = newFile();
    const md5 = await copyRange(src.file, file, start, end);
    if (!uploads.has(upload.uploadId)) {
      await rm(file, { force: true });
      throw new S3Error(404, 'NoSuchUpload', 'The specified upload does not exist.');
    }
    const old = upload.parts.get(n);
    upload.parts.set(n, { file, size: Math.max(0, end - start + 1), etag: `"${md5}"`, lastModified: now() });
    if (old) await rm(old.file, { force: true });
    sendXml(res, 200, 'CopyPartResult', { ETag: `"${md5}"`, LastModified: now().toISOString() });
  }

  async function completeMultipartUpload(
    req: IncomingMessage,
    res: ServerResponse,
    auth: AuthContext,
    objects: Map<string, StoredObject>,
    bucketName: string,
    key: string,
    uploadId: string,
  ): Promise<void> {
    const upload = requireUpload(uploadId, key);
    const xml = (await readSmallBody(req, auth)).toString('utf8');
    if (!/<CompleteMultipartUpload[\s>]/.test(xml))
      throw new S3Error(400, 'MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema');
    const listed = xmlAll(xml, 'Part').map((p) => ({ n: Number(xmlOne(p, 'PartNumber')), etag: xmlOne(p, 'ETag') ?? '' }));
    if (listed.length === 0)
      throw new S3Error(400, 'MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema');
    let previous = 0;
    for (const p of listed) {
      // "The list of parts was not in ascending order. The parts list must be specified in order by part number."
      if (!Number.isInteger(p.n) || p.n <= previous)
        throw new S3Error(
          400,
          'InvalidPartOrder',
          'The list of parts was not in ascending order. The parts list must be specified in order by part number.',
        );
      previous = p.n;
    }
    const chosen: StoredPart[] = [];
    for (const p of listed) {
      const stored = upload.parts.get(p.n);
      const etag = p.etag.startsWith('"') ? p.etag : `"${p.etag}"`;
      if (!stored || stored.etag !== etag) {
        throw new S3Error(
          400,
          'InvalidPart',
          "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.",
        );
      }
      chosen.push(stored);
    }
    for (const [i, stored] of chosen.entries()) {
      // "EntityTooSmall: Your proposed upload is smaller than the minimum allowed object size. Each part must be at
      // least 5 MB in size, except the last part."
      if (i < chosen.length - 1 && stored.size < minPartSize) {
        throw new S3Error(400, 'EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed size');
      }
    }
    const file = newFile();
    const out = createWriteStream(file);
    const etagHash = createHash('md5');
    let size = 0;
    try {
      for (const p of chosen) {
        await pipeline(
          createReadStream(p.file),
          new Writable({
            write(chunk: Buffer, _e, cb) {
              if (!out.write(chunk)) out.once('drain', () => cb());
              else cb();
            },
          }),
        );
        etagHash.update(Buffer.from(p.etag.slice(1, -1), 'hex'));
        size += p.size;
      }
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    } catch (err) {
      out.destroy();
      await rm(file, { force: true });
      throw err;
    }
    if (uploads.get(uploadId) !== upload) {
      await rm(file, { force: true });
      throw new S3Error(404, 'NoSuchUpload', 'The specified upload does not exist.');
    }
    uploads.delete(uploadId);
    for (const p of upload.parts.values()) await rm(p.file, { force: true });
    const etag = `"${etagHash.digest('hex')}-${chosen.length}"`;
    await storeObject(objects, key, {
      file,
      size,
      etag,
      lastModified: now(),
      contentType: upload.contentType,
      metadata: upload.metadata,
      storageClass: upload.storageClass,
    });
    sendXml(res, 200, 'CompleteMultipartUploadResult', { Location: `/${bucketName}/${key}`, Bucket: bucketName, Key: key, ETag: etag });
  }

  const server: Server = createServer((req, res) => {
    const record: RecordedRequest = { method: req.method ?? 'GET', path: req.url ?? '/', query: {} };
    requests.push(record);
    const requestId = randomBytes(8).toString('hex').toUpperCase();
    res.setHeader('x-amz-request-id', requestId);
    res.setHeader('Server', 'berth-strict-s3');
    res.on('finish', () => {
      record.status = res.statusCode;
    });
    handle(req, res, record).catch((err: unknown) => {
      const e = err instanceof S3Error ? err : new S3Error(500, 'InternalError', 'We encountered an internal error. Please try again.');
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // Drain what the client still sends so it reads the error rather than a reset.
      if (!req.complete) req.resume();
      if (req.method === 'HEAD') {
        res.writeHead(e.status).end();
        return;
      }
      const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${xmlEscape(e.code)}</Code><Message>${xmlEscape(e.message)}</Message><Resource>${xmlEscape(record.path)}</Resource><RequestId>${requestId}</RequestId></Error>`;
      res.writeHead(e.status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  };
  t.teardown(stop);
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    accessKey,
    secretKey,
    region,
    requests,
    setClockOffset(ms: number) {
      clockOffset = ms;
    },
    keys: () => [...(buckets.get(bucket)?.keys() ?? [])].sort(compareUtf8),
    uploads: () => [...uploads.values()].map((u) => ({ key: u.key, uploadId: u.uploadId, parts: [...u.parts.keys()].sort((a, b) => a - b) })),
    stop,
  };
}

/** S3 orders keys by their UTF-8 bytes. */
function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
