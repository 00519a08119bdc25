/**
 * The strict S3 test server must refuse what S3 refuses on every point the S3 driver relies on; otherwise the
 * driver's tests prove nothing. Driven by the real AWS SDK (an independent SigV4 and aws-chunked implementation)
 * and by plain fetch for requests the SDK would never send.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import t from 'tap';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
  paginateListObjectsV2,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { startS3Server, type S3Server } from '../helpers/s3-server.js';
import { sha256Hex } from '../helpers/digest.js';

for (const k of Object.keys(process.env)) if (k.startsWith('AWS_') && k !== 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED') delete process.env[k];

const MiB = 1024 * 1024;

function client(server: S3Server, extra: Partial<S3ClientConfig> = {}): S3Client {
  const c = new S3Client({
    region: server.region,
    endpoint: server.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKey, secretAccessKey: server.secretKey },
    maxAttempts: 1,
    ...extra,
  });
  t.teardown(() => c.destroy());
  return c;
}

/** The S3 error code a rejected SDK call carried. */
async function s3ErrorOf(p: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  try {
    await p;
    return { name: 'resolved', status: undefined };
  } catch (err) {
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name ?? '', status: e.$metadata?.httpStatusCode };
  }
}

async function body(c: S3Client, bucket: string, key: string, range?: string): Promise<Buffer> {
  const out = await c.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: range }));
  return Buffer.from(await (out.Body as NonNullable<typeof out.Body>).transformToByteArray());
}

t.test('authentication', async (t) => {
  const server = await startS3Server(t);
  const c = client(server);
  await c.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'k', Body: 'v' }));

  const plain = await fetch(`${server.endpoint}/${server.bucket}/k`);
  t.equal(plain.status, 403, 'an unsigned request is refused');
  t.match(await plain.text(), /<Code>AccessDenied<\/Code>/, 'with an S3 XML error');

  const wrongSecret = client(server, { credentials: { accessKeyId: server.accessKey, secretAccessKey: 'not-the-secret' } });
  t.same(
    await s3ErrorOf(wrongSecret.send(new GetObjectCommand({ Bucket: server.bucket, Key: 'k' }))),
    { name: 'SignatureDoesNotMatch', status: 403 },
    'a wrong secret',
  );
  const wrongKey = client(server, { credentials: { accessKeyId: 'SOMEONEELSE', secretAccessKey: server.secretKey } });
  t.same(
    await s3ErrorOf(wrongKey.send(new GetObjectCommand({ Bucket: server.bucket, Key: 'k' }))),
    { name: 'InvalidAccessKeyId', status: 403 },
    'an unknown key id',
  );
  const skewed = client(server, { systemClockOffset: -3_600_000 });
  t.equal((await s3ErrorOf(skewed.send(new GetObjectCommand({ Bucket: server.bucket, Key: 'k' })))).status, 403, 'a request an hour old');

  // A signed request whose body was swapped: the x-amz-content-sha256 no longer matches.
  const swapped = client(server);
  swapped.middlewareStack.add(
    (next) => async (args) => {
      const req = args.request as { body?: unknown; headers: Record<string, string> };
      if (req.headers['x-amz-content-sha256'] && typeof req.body === 'string') req.body = 'V';
      return next(args);
    },
    { step: 'finalizeRequest', priority: 'low', name: 'swapBody' },
  );
  t.same(
    await s3ErrorOf(swapped.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'k', Body: 'v' }))),
    { name: 'XAmzContentSHA256Mismatch', status: 400 },
    'a body that does not match its signed hash',
  );
  t.equal((await body(c, server.bucket, 'k')).toString(), 'v', 'and the refused PUT changed nothing');
});

t.test('aws-chunked streaming uploads are decoded, not stored', async (t) => {
  const server = await startS3Server(t);
  // The SDK's default: CRC32 in a trailer, body framed as aws-chunked (STREAMING-UNSIGNED-PAYLOAD-TRAILER).
  const c = client(server, { requestChecksumCalculation: 'WHEN_SUPPORTED' });
  const data = randomBytes(3 * MiB + 123);
  await c.send(
    new PutObjectCommand({
      Bucket: server.bucket,
      Key: 'streamed',
      Body: Readable.from([data.subarray(0, MiB), data.subarray(MiB)]),
      ContentLength: data.length,
    }),
  );
  const framed = server.requests.find((r) => r.method === 'PUT' && r.path.endsWith('/streamed'));
  t.match(framed?.payload, /^STREAMING-/, 'the SDK sent an aws-chunked body');
  t.equal(framed?.bytes, data.length, 'the server stored the decoded length');
  t.equal(sha256Hex(await body(c, server.bucket, 'streamed')), sha256Hex(data), 'GET returns the payload without framing');
});

t.test('multipart uploads', async (t) => {
  const server = await startS3Server(t, { pageSize: 2 });
  const c = client(server);
  const b = server.bucket;
  const create = async (key: string) => (await c.send(new CreateMultipartUploadCommand({ Bucket: b, Key: key }))).UploadId as string;
  const part = async (key: string, id: string, n: number, data: Buffer) =>
    (await c.send(new UploadPartCommand({ Bucket: b, Key: key, UploadId: id, PartNumber: n, Body: data }))).ETag as string;

  const small = await create('small');
  const e1 = await part('small', small, 1, randomBytes(MiB));
  const e2 = await part('small', small, 2, randomBytes(MiB));
  // "EntityTooSmall: Your proposed upload is smaller than the minimum allowed object size. Each part must be at
  // least 5 MB in size, except the last part."
  t.same(
    await s3ErrorOf(
      c.send(
        new CompleteMultipartUploadCommand({
          Bucket: b,
          Key: 'small',
          UploadId: small,
          MultipartUpload: {
            Parts: [
              { PartNumber: 1, ETag: e1 },
              { PartNumber: 2, ETag: e2 },
            ],
          },
        }),
      ),
    ),
    { name: 'EntityTooSmall', status: 400 },
    'a non-last part under 5 MiB is refused at Complete',
  );
  t.same(
    await s3ErrorOf(
      c.send(
        new CompleteMultipartUploadCommand({ Bucket: b, Key: 'small', UploadId: small, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e2 }] } }),
      ),
    ),
    { name: 'InvalidPart', status: 400 },
    'a wrong ETag is refused',
  );
  t.same(
    await s3ErrorOf(
      c.send(
        new CompleteMultipartUploadCommand({
          Bucket: b,
          Key: 'small',
          UploadId: small,
          MultipartUpload: {
            Parts: [
              { PartNumber: 2, ETag: e2 },
              { PartNumber: 1, ETag: e1 },
            ],
          },
        }),
      ),
    ),
    { name: 'InvalidPartOrder', status: 400 },
    'parts out of order are refused',
  );
  const parts = await c.send(new ListPartsCommand({ Bucket: b, Key: 'small', UploadId: small }));
  t.same(
    parts.Parts?.map((p) => [p.PartNumber, p.Size]),
    [
      [1, MiB],
      [2, MiB],
    ],
    'ListParts lists the parts',
  );
  const other = await create('other');
  const third = await create('zzz');
  const listed = await c.send(new ListMultipartUploadsCommand({ Bucket: b }));
  t.equal(listed.IsTruncated, true, 'ListMultipartUploads pages');
  const rest = await c.send(
    new ListMultipartUploadsCommand({ Bucket: b, KeyMarker: listed.NextKeyMarker, UploadIdMarker: listed.NextUploadIdMarker }),
  );
  t.same(
    [...(listed.Uploads ?? []), ...(rest.Uploads ?? [])].map((u) => u.UploadId).sort(),
    [small, other, third].sort(),
    'every upload across pages',
  );
  await c.send(new AbortMultipartUploadCommand({ Bucket: b, Key: 'small', UploadId: small }));
  t.same(
    await s3ErrorOf(c.send(new ListPartsCommand({ Bucket: b, Key: 'small', UploadId: small }))),
    { name: 'NoSuchUpload', status: 404 },
    'aborted',
  );

  // A 5 MiB part, then a copied range as the last part.
  const source = randomBytes(7 * MiB);
  await c.send(new PutObjectCommand({ Bucket: b, Key: 'source', Body: source }));
  const big = randomBytes(5 * MiB);
  const eb = await part('other', other, 1, big);
  const copied = await c.send(
    new UploadPartCopyCommand({
      Bucket: b,
      Key: 'other',
      UploadId: other,
      PartNumber: 2,
      CopySource: `${b}/source`,
      CopySourceRange: 'bytes=100-2099',
    }),
  );
  await c.send(
    new CompleteMultipartUploadCommand({
      Bucket: b,
      Key: 'other',
      UploadId: other,
      MultipartUpload: {
        Parts: [
          { PartNumber: 1, ETag: eb },
          { PartNumber: 2, ETag: copied.CopyPartResult?.ETag },
        ],
      },
    }),
  );
  t.equal(
    sha256Hex(await body(c, b, 'other')),
    sha256Hex(Buffer.concat([big, source.subarray(100, 2100)])),
    'UploadPartCopy copied exactly the range',
  );
  t.same(
    await s3ErrorOf(
      c.send(
        new UploadPartCopyCommand({
          Bucket: b,
          Key: 'zzz',
          UploadId: third,
          PartNumber: 1,
          CopySource: `${b}/source`,
          CopySourceRange: `bytes=0-${7 * MiB}`,
        }),
      ),
    ),
    { name: 'InvalidRange', status: 400 },
    'a copy range past the end is refused',
  );
});

t.test('objects, ranges, listing, copy and batch delete', async (t) => {
  const server = await startS3Server(t, { pageSize: 3, maxCopyObjectSize: MiB });
  const c = client(server);
  const b = server.bucket;
  const data = randomBytes(1000);
  await c.send(new PutObjectCommand({ Bucket: b, Key: 'd/obj', Body: data }));
  t.same(await body(c, b, 'd/obj', 'bytes=10-19'), data.subarray(10, 20), 'a Range GET');
  t.same(await body(c, b, 'd/obj', 'bytes=990-'), data.subarray(990), 'an open-ended Range GET');
  t.same(
    await s3ErrorOf(c.send(new GetObjectCommand({ Bucket: b, Key: 'd/obj', Range: 'bytes=1000-' }))),
    { name: 'InvalidRange', status: 416 },
    'a range past the end',
  );
  t.same(await s3ErrorOf(c.send(new GetObjectCommand({ Bucket: b, Key: 'd/none' }))), { name: 'NoSuchKey', status: 404 }, 'a missing key');

  for (const k of ['d/a', 'd/b', 'd/sub/1', 'd/sub/2', 'd/sub2/x', 'e']) await c.send(new PutObjectCommand({ Bucket: b, Key: k, Body: k }));
  const keys: string[] = [];
  const prefixes: string[] = [];
  let pages = 0;
  for await (const page of paginateListObjectsV2({ client: c }, { Bucket: b, Prefix: 'd/', Delimiter: '/' })) {
    pages++;
    keys.push(...(page.Contents ?? []).map((o) => o.Key as string));
    prefixes.push(...(page.CommonPrefixes ?? []).map((p) => p.Prefix as string));
  }
  t.ok(pages > 1, 'the listing came in pages');
  t.same(keys, ['d/a', 'd/b', 'd/obj'], 'keys directly under the prefix, once each');
  t.same(prefixes, ['d/sub/', 'd/sub2/'], 'common prefixes, once each');

  await c.send(new CopyObjectCommand({ Bucket: b, Key: 'copy', CopySource: `${b}/d/obj` }));
  t.same(await body(c, b, 'copy'), data, 'CopyObject');
  await c.send(new PutObjectCommand({ Bucket: b, Key: 'large', Body: randomBytes(MiB + 1) }));
  t.same(
    await s3ErrorOf(c.send(new CopyObjectCommand({ Bucket: b, Key: 'copy2', CopySource: `${b}/large` }))),
    { name: 'InvalidRequest', status: 400 },
    'CopyObject refuses a source above the single-copy limit',
  );

  const del = await c.send(new DeleteObjectsCommand({ Bucket: b, Delete: { Objects: ['d/a', 'd/b', 'missing'].map((Key) => ({ Key })) } }));
  t.same(
    del.Deleted?.map((d) => d.Key),
    ['d/a', 'd/b', 'missing'],
    'DeleteObjects reports every key (missing ones too, as S3 does)',
  );
  t.notOk(server.keys().includes('d/a'), 'deleted');

  const unsignedDelete = await fetch(`${server.endpoint}/${b}?delete`, { method: 'POST', body: '<Delete><Object><Key>e</Key></Object></Delete>' });
  t.equal(unsignedDelete.status, 403, 'an unsigned batch delete is refused');
  t.ok(server.keys().includes('e'), 'and deleted nothing');
});

t.test('beforeHandle holds a request until the test lets it go', async (t) => {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let arrived!: () => void;
  const heldArrived = new Promise<void>((resolve) => (arrived = resolve));
  const seen: string[] = [];
  const server = await startS3Server(t, {
    beforeHandle: async (r) => {
      seen.push(`${r.method} ${r.path}`);
      if (r.method === 'PUT' && r.path.endsWith('/held')) {
        arrived();
        await released;
      }
    },
  });
  const c = client(server);
  const held = c.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'held', Body: Buffer.from('late') }));
  await heldArrived;
  await c.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'free', Body: Buffer.from('early') }));
  t.same(server.keys(), ['free'], 'a request that is not held completes while the held one waits');
  release();
  await held;
  t.same(server.keys(), ['free', 'held'], 'the held request completes once released');
  t.same(seen, [`PUT /${server.bucket}/held`, `PUT /${server.bucket}/free`], 'the hook saw each request, with its method and path');
});
