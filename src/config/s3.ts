import { bool, checkKeys, ConfigError, duration, int, optString, type RawSection } from './fields.js';

const MiB = 1024 * 1024;

/** S3's smallest part (every part of a multipart upload but the last). */
export const MIN_PART_SIZE = 5 * MiB;
/** S3's largest single PUT / CopyObject source and largest part. */
export const MAX_SINGLE_OBJECT = 5 * 1024 * MiB;

/** Everything the S3 driver needs, parsed from Distribution's `storage.s3` section. */
export interface S3DriverOptions {
  bucket: string;
  region: string;
  /** Full endpoint URL (scheme included), or undefined for AWS's own endpoint for the region. */
  endpoint?: string;
  forcePathStyle: boolean;
  /** `rootdirectory` without leading or trailing slashes; `''` for the bucket root. */
  rootDirectory: string;
  /** Static credentials; undefined means the default AWS credential chain (env, profile, web identity, IMDS). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Part size of streamed uploads (`chunksize`), at least 5 MiB. */
  chunkSize: number;
  /**
   * Parts of one streamed upload sent at once (berth extra `multipartuploadmaxconcurrency`, default 2). A writer holds
   * up to this many parts in flight plus the one filling: (N + 1) x `chunksize` of memory per upload.
   */
  multipartUploadMaxConcurrency: number;
  /** Part size of server-side multipart copies. */
  multipartCopyChunkSize: number;
  /** Parallel UploadPartCopy requests of one move. */
  multipartCopyMaxConcurrency: number;
  /** Objects larger than this are moved with a multipart copy (capped at 5 GiB, S3's CopyObject limit). */
  multipartCopyThresholdSize: number;
  /** Server-side encryption: `AES256`, or `aws:kms` with {@link keyId}; undefined for none. */
  serverSideEncryption?: 'AES256' | 'aws:kms';
  keyId?: string;
  /** Skip TLS certificate verification (`skipverify`). */
  skipVerify: boolean;
  /** `x-amz-storage-class` of new objects; undefined (`NONE`) sends none. */
  storageClass?: string;
  /** Canned ACL of new objects; undefined sends none (the bucket's default applies). */
  objectAcl?: string;
  useDualstack: boolean;
  accelerate: boolean;
  userAgent?: string;
  /** Default lifetime of presigned redirect URLs (berth extra `redirectexpiry`, default 20m like Distribution). */
  redirectExpirySeconds: number;
  /** Attempts per S3 request before giving up (berth extra `maxattempts`, default 5). */
  maxAttempts: number;
  /** Socket connect timeout (berth extra `connecttimeout`, default 10s). */
  connectTimeoutMs: number;
  /** Idle socket timeout of one request (berth extra `requesttimeout`, default 60s). */
  requestTimeoutMs: number;
}

const KNOWN = [
  'accesskey',
  'secretkey',
  'sessiontoken',
  'region',
  'regionendpoint',
  'forcepathstyle',
  'bucket',
  'rootdirectory',
  'chunksize',
  'multipartcopychunksize',
  'multipartcopymaxconcurrency',
  'multipartcopythresholdsize',
  'encrypt',
  'keyid',
  'secure',
  'skipverify',
  'v4auth',
  'storageclass',
  'objectacl',
  'usedualstack',
  'accelerate',
  'useragent',
  // berth extras
  'redirectexpiry',
  'maxattempts',
  'connecttimeout',
  'requesttimeout',
  'multipartuploadmaxconcurrency',
] as const;

/** Distribution keys berth accepts without acting on them. */
const IGNORED = ['loglevel', 'checksum_disabled', 'checksum_algorithm', 'logging'] as const;

const STORAGE_CLASSES = [
  'STANDARD',
  'REDUCED_REDUNDANCY',
  'STANDARD_IA',
  'ONEZONE_IA',
  'INTELLIGENT_TIERING',
  'GLACIER_IR',
  'OUTPOSTS',
  'EXPRESS_ONEZONE',
  'NONE',
];

/**
 * Reads Distribution's `storage.s3` section (same keys, same defaults where berth implements them) into
 * {@link S3DriverOptions}. Unknown keys warn; bad values throw a {@link ConfigError} naming the key.
 */
export function parseS3Config(raw: RawSection, warn: (message: string) => void): S3DriverOptions {
  const p = 'storage.s3.';
  checkKeys(raw, p, KNOWN, warn, IGNORED);
  const bucket = optString(raw, 'bucket', p);
  if (!bucket) throw new ConfigError(`${p}bucket: required`);
  const regionEndpoint = optString(raw, 'regionendpoint', p);
  const region = optString(raw, 'region', p) ?? (regionEndpoint ? 'us-east-1' : undefined);
  if (!region) throw new ConfigError(`${p}region: required (unless regionendpoint is set)`);
  const secure = bool(raw, 'secure', p, true);
  let endpoint: string | undefined;
  if (regionEndpoint) {
    endpoint = /^[a-z][a-z0-9+.-]*:\/\//i.test(regionEndpoint) ? regionEndpoint : `${secure ? 'https' : 'http'}://${regionEndpoint}`;
    try {
      new URL(endpoint);
    } catch {
      throw new ConfigError(`${p}regionendpoint: not a valid URL or host, got ${JSON.stringify(regionEndpoint)}`);
    }
  } else if (!secure) {
    endpoint = `http://s3.${region}.amazonaws.com`;
  }
  const accessKey = optString(raw, 'accesskey', p);
  const secretKey = optString(raw, 'secretkey', p);
  if (Boolean(accessKey) !== Boolean(secretKey)) throw new ConfigError(`${p}accesskey and ${p}secretkey: set both or neither`);
  const sessionToken = optString(raw, 'sessiontoken', p);
  const credentials =
    accessKey && secretKey ? { accessKeyId: accessKey, secretAccessKey: secretKey, ...(sessionToken ? { sessionToken } : {}) } : undefined;

  // "chunksize … The default is 10 MB. Must be at least 5 MB" (Distribution's S3 driver).
  const chunkSize = int(raw, 'chunksize', p, 10 * MiB, MIN_PART_SIZE);
  if (chunkSize > MAX_SINGLE_OBJECT) throw new ConfigError(`${p}chunksize: at most ${MAX_SINGLE_OBJECT} (S3's largest part)`);
  const multipartUploadMaxConcurrency = int(raw, 'multipartuploadmaxconcurrency', p, 2, 1);
  const multipartCopyChunkSize = int(raw, 'multipartcopychunksize', p, 32 * MiB, MIN_PART_SIZE);
  if (multipartCopyChunkSize > MAX_SINGLE_OBJECT) throw new ConfigError(`${p}multipartcopychunksize: at most ${MAX_SINGLE_OBJECT}`);
  const multipartCopyMaxConcurrency = int(raw, 'multipartcopymaxconcurrency', p, 100, 1);
  const multipartCopyThresholdSize = Math.min(int(raw, 'multipartcopythresholdsize', p, 32 * MiB, 0), MAX_SINGLE_OBJECT);

  const encrypt = bool(raw, 'encrypt', p, false);
  const keyId = optString(raw, 'keyid', p);
  if (keyId && !encrypt) warn(`${p}keyid: ignored because ${p}encrypt is false`);

  if (!bool(raw, 'v4auth', p, true)) warn(`${p}v4auth: signature version 2 is not supported; berth signs with version 4`);

  const storageClassRaw = (optString(raw, 'storageclass', p) ?? 'STANDARD').toUpperCase();
  if (!STORAGE_CLASSES.includes(storageClassRaw)) {
    throw new ConfigError(`${p}storageclass: expected one of ${STORAGE_CLASSES.join(', ')}, got ${JSON.stringify(storageClassRaw)}`);
  }
  const rootDirectory = (optString(raw, 'rootdirectory', p) ?? '').replace(/^\/+|\/+$/g, '');
  if (rootDirectory.split('/').some((c) => c === '.' || c === '..')) {
    throw new ConfigError(`${p}rootdirectory: must not contain . or .. components`);
  }

  const redirectExpiryMs = duration(raw, 'redirectexpiry', p, 20 * 60_000);
  if (redirectExpiryMs < 1000 || redirectExpiryMs > 7 * 24 * 3_600_000) {
    throw new ConfigError(`${p}redirectexpiry: must be between 1s and 168h (the longest a SigV4 presigned URL lives)`);
  }

  return {
    bucket,
    region,
    endpoint,
    forcePathStyle: bool(raw, 'forcepathstyle', p, false),
    rootDirectory,
    credentials,
    chunkSize,
    multipartUploadMaxConcurrency,
    multipartCopyChunkSize,
    multipartCopyMaxConcurrency,
    multipartCopyThresholdSize,
    serverSideEncryption: encrypt ? (keyId ? 'aws:kms' : 'AES256') : undefined,
    keyId: encrypt ? keyId : undefined,
    skipVerify: bool(raw, 'skipverify', p, false),
    storageClass: storageClassRaw === 'NONE' ? undefined : storageClassRaw,
    objectAcl: optString(raw, 'objectacl', p),
    useDualstack: bool(raw, 'usedualstack', p, false),
    accelerate: bool(raw, 'accelerate', p, false),
    userAgent: optString(raw, 'useragent', p),
    redirectExpirySeconds: Math.round(redirectExpiryMs / 1000),
    maxAttempts: int(raw, 'maxattempts', p, 5, 1),
    connectTimeoutMs: duration(raw, 'connecttimeout', p, 10_000),
    requestTimeoutMs: duration(raw, 'requesttimeout', p, 60_000),
  };
}
