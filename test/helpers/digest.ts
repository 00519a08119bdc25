import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/**
 * The tests' one sha256 helper: OCI digests (`sha256:<hex>`) and bare hex hashes of bytes, streams and files.
 * Streams are hashed as they flow, never held in memory.
 */

/** Bytes a digest is taken of. */
export type Hashable = Buffer | Uint8Array | string;

/** The bare hex sha256 of some bytes (what S3 payload hashes and raw comparisons use). */
export function sha256Hex(data: Hashable): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The OCI digest `sha256:<hex>` of some bytes. */
export function sha256(data: Hashable): string {
  return `sha256:${sha256Hex(data)}`;
}

/** Digest, hex and length of everything a stream or response body carries, hashed chunk by chunk. */
export async function digestStream(body: AsyncIterable<Hashable>): Promise<{ digest: string; hex: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of body) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    hash.update(b);
    size += b.length;
  }
  const hex = hash.digest('hex');
  return { digest: `sha256:${hex}`, hex, size };
}

/** The OCI digest of a file, streamed. */
export async function fileDigest(path: string): Promise<string> {
  return (await digestStream(createReadStream(path) as AsyncIterable<Buffer>)).digest;
}
