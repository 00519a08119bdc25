import t from 'tap';
import { ConfigError } from '../../src/config/fields.js';
import { parseS3Config } from '../../src/storage/drivers/s3-config.js';

const MiB = 1024 * 1024;

function parse(raw: Record<string, unknown>): { options: ReturnType<typeof parseS3Config>; warnings: string[] } {
  const warnings: string[] = [];
  return { options: parseS3Config(raw, (m) => warnings.push(m)), warnings };
}

t.test('Distribution defaults', async (t) => {
  const { options, warnings } = parse({ bucket: 'b', region: 'eu-central-1' });
  t.same(warnings, []);
  t.equal(options.chunkSize, 10 * MiB, 'chunksize defaults to 10 MiB');
  t.equal(options.endpoint, undefined, 'AWS endpoint');
  t.equal(options.forcePathStyle, false);
  t.equal(options.rootDirectory, '');
  t.equal(options.credentials, undefined, 'no keys: the default AWS credential chain');
  t.equal(options.serverSideEncryption, undefined);
  t.equal(options.storageClass, 'STANDARD');
  t.equal(options.multipartCopyThresholdSize, 32 * MiB);
  t.equal(options.multipartCopyChunkSize, 32 * MiB);
  t.equal(options.multipartCopyMaxConcurrency, 100);
  t.equal(options.multipartUploadMaxConcurrency, 2, 'berth extra multipartuploadmaxconcurrency defaults to 2 parts in flight');
  t.equal(options.redirectExpirySeconds, 1200, 'presigned URLs live 20 minutes');
});

t.test('a MinIO-style section', async (t) => {
  const { options } = parse({
    bucket: 'registry',
    regionendpoint: 'minio.local:9000',
    secure: false,
    forcepathstyle: 'true',
    accesskey: 'AK',
    secretkey: 'SK',
    rootdirectory: '/a/b/',
    chunksize: '5242880',
    encrypt: true,
    keyid: 'kms-key',
    storageclass: 'none',
    redirectexpiry: '5m',
    multipartuploadmaxconcurrency: '4',
  });
  t.equal(options.endpoint, 'http://minio.local:9000', 'secure: false makes a scheme-less endpoint http');
  t.equal(options.region, 'us-east-1', 'region defaults when an endpoint is given');
  t.equal(options.forcePathStyle, true);
  t.same(options.credentials, { accessKeyId: 'AK', secretAccessKey: 'SK' });
  t.equal(options.rootDirectory, 'a/b', 'rootdirectory trimmed of slashes');
  t.equal(options.chunkSize, 5 * MiB);
  t.equal(options.serverSideEncryption, 'aws:kms');
  t.equal(options.keyId, 'kms-key');
  t.equal(options.storageClass, undefined, 'NONE sends no storage class');
  t.equal(options.redirectExpirySeconds, 300);
  t.equal(options.multipartUploadMaxConcurrency, 4, 'multipartuploadmaxconcurrency as a string (an env variable)');
  t.equal(
    parse({ bucket: 'b', regionendpoint: 'https://s3.example:8443' }).options.endpoint,
    'https://s3.example:8443',
    'an endpoint with a scheme is kept',
  );
});

t.test('invalid sections name the key', async (t) => {
  t.throws(() => parse({ region: 'x' }), new ConfigError('storage.s3.bucket: required'));
  t.throws(() => parse({ bucket: 'b' }), /storage\.s3\.region/);
  // "chunksize … must be at least 5 MB": S3 refuses smaller parts.
  t.throws(() => parse({ bucket: 'b', region: 'r', chunksize: 1024 }), /storage\.s3\.chunksize: expected an integer >= 5242880/);
  t.throws(() => parse({ bucket: 'b', region: 'r', accesskey: 'only-one' }), /accesskey and storage\.s3\.secretkey/);
  t.throws(() => parse({ bucket: 'b', region: 'r', storageclass: 'PLATINUM' }), /storage\.s3\.storageclass/);
  t.throws(() => parse({ bucket: 'b', region: 'r', redirectexpiry: '30d' }), /storage\.s3\.redirectexpiry/);
  t.throws(() => parse({ bucket: 'b', region: 'r', rootdirectory: '/a/../b' }), /storage\.s3\.rootdirectory/);
  for (const bad of [0, -1, 1.5, 'two', '', true]) {
    t.throws(
      () => parse({ bucket: 'b', region: 'r', multipartuploadmaxconcurrency: bad }),
      /^storage\.s3\.multipartuploadmaxconcurrency: expected an integer >= 1/,
      `multipartuploadmaxconcurrency: ${JSON.stringify(bad)} is refused`,
    );
  }
  t.equal(parse({ bucket: 'b', region: 'r', multipartuploadmaxconcurrency: 1 }).options.multipartUploadMaxConcurrency, 1, '1: one part at a time');
});

t.test('unknown and unused keys warn', async (t) => {
  const { warnings } = parse({ bucket: 'b', region: 'r', v4auth: false, loglevel: 'debug', bogus: 1, keyid: 'k' });
  t.ok(
    warnings.some((w) => w.startsWith('storage.s3.v4auth')),
    'v4auth: false warns (only SigV4 is implemented)',
  );
  t.ok(
    warnings.some((w) => w.startsWith('storage.s3.loglevel') && w.includes('not used')),
    'loglevel is accepted, unused',
  );
  t.ok(
    warnings.some((w) => w.startsWith('storage.s3.bogus') && w.includes('unknown')),
    'unknown key',
  );
  t.ok(
    warnings.some((w) => w.startsWith('storage.s3.keyid')),
    'keyid without encrypt',
  );
});
