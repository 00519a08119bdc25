import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { Client, credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { loadSync, type MethodDefinition, type PackageDefinition } from '@grpc/proto-loader';
import { readLayoutIndex, REF_NAME } from './oci-layout.js';
import { sha256 } from './digest.js';

/**
 * A minimal kubelet: the CRI image service (`runtime.v1.ImageService`) over gRPC on containerd's socket, as the
 * kubelet calls it to pull images for pods. The messages are declared in test/fixtures/cri/image-service.proto.
 *
 * Also {@link makeRunnableImageLayout}: OCI layouts whose layers are real tar archives, which container runtimes
 * (containerd's unpacker, dockerd) can apply, unlike the random-byte layers of oci-layout.ts.
 */

/** CRI `ImageSpec`: the image reference (tag or digest). */
export interface CriImageSpec {
  image: string;
  annotations?: Record<string, string>;
}

/** CRI `AuthConfig`: registry credentials the kubelet passes from a pod's image pull secret. */
export interface CriAuthConfig {
  username?: string;
  password?: string;
  /** base64 of `username:password` */
  auth?: string;
  /** The registry host the credentials are for (empty: any). */
  serverAddress?: string;
  identityToken?: string;
  registryToken?: string;
}

/** CRI `Image`: what the runtime knows about a pulled image. */
export interface CriImage {
  /** The image ID (the config digest for containerd). */
  id: string;
  repoTags: string[];
  /** `name@sha256:...`: the manifest (or index) digest the image was pulled by. */
  repoDigests: string[];
  /** Size in bytes, as a decimal string (uint64). */
  size: string;
}

/** A CRI image service client on one containerd socket. */
export interface CriImageClient {
  /** PullImage; resolves with `image_ref` (the image ID). Rejects with the gRPC error (code, details). */
  pullImage(image: string, auth?: CriAuthConfig, timeoutMs?: number): Promise<string>;
  /** ImageStatus; resolves with the image, or undefined when the runtime does not have it. */
  imageStatus(image: string): Promise<CriImage | undefined>;
  /** ListImages (optionally filtered by reference). */
  listImages(image?: string): Promise<CriImage[]>;
  close(): void;
}

/** The part of a tap test the helpers need. */
export interface Teardownable {
  teardown(fn: () => unknown): void;
}

/** The repository root: the nearest directory above this module with a package.json. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json not found above test/helpers/cri');
    dir = up;
  }
  return dir;
}

const SERVICE = 'runtime.v1.ImageService';
let loaded: PackageDefinition | undefined;

function definition(): PackageDefinition {
  loaded ??= loadSync(join(repoRoot(), 'test', 'fixtures', 'cri', 'image-service.proto'), {
    keepCase: false,
    longs: String,
    defaults: true,
    arrays: true,
  });
  return loaded;
}

function method(name: string): MethodDefinition<object, object> {
  const service = definition()[SERVICE];
  if (service === undefined || 'format' in service) throw new Error(`${SERVICE} is not a service in the CRI fixture`);
  const m = service[name];
  if (m === undefined) throw new Error(`${SERVICE}/${name} missing from the CRI fixture`);
  return m;
}

/** A gRPC error from the runtime: `code` is the gRPC status, `details` the runtime's message. */
export function isGrpcError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number';
}

/**
 * Connects a CRI image service client to containerd's gRPC socket (`cri` plugin enabled), closed at teardown.
 * The kubelet's calls go to the same socket with no containerd namespace: the plugin keeps its images in `k8s.io`.
 */
export function criImageClient(t: Teardownable, socket: string): CriImageClient {
  const client = new Client(`unix://${socket}`, credentials.createInsecure());
  t.teardown(() => client.close());
  const unary = <Res>(name: string, request: object, timeoutMs = 30_000): Promise<Res> => {
    const m = method(name);
    return new Promise<Res>((resolve, reject) => {
      client.makeUnaryRequest<object, object>(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
        request,
        new Metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, value) => {
          if (err) reject(err);
          else resolve(value as Res);
        },
      );
    });
  };
  return {
    async pullImage(image, auth, timeoutMs) {
      const res = await unary<{ imageRef: string }>('PullImage', { image: { image }, ...(auth ? { auth } : {}) }, timeoutMs ?? 60_000);
      return res.imageRef;
    },
    async imageStatus(image) {
      const res = await unary<{ image: CriImage | null }>('ImageStatus', { image: { image } });
      return res.image ?? undefined;
    },
    async listImages(image) {
      const res = await unary<{ images: CriImage[] }>('ListImages', image ? { filter: { image: { image } } } : {});
      return res.images;
    },
    close: () => client.close(),
  };
}

/** What one registry host's `hosts.toml` says (containerd's registry host configuration, `config_path`). */
export interface HostsToml {
  /** `server`: the registry itself (`http://...` for plain HTTP). */
  server: string;
  /** A host tried before the server for pull and resolve (containerd adds `?ns=<registry host>` to its requests). */
  mirror?: string;
}

/**
 * Writes `<hostsDir>/<host>/hosts.toml` (the layout `ctr --hosts-dir` and the CRI plugin's `config_path` read):
 * `server`, and with `mirror` a `[host."<mirror>"]` with pull and resolve capabilities.
 */
export async function writeHostsToml(hostsDir: string, host: string, config: HostsToml): Promise<void> {
  const lines = [`server = ${JSON.stringify(config.server)}`, ''];
  if (config.mirror) lines.push(`[host.${JSON.stringify(config.mirror)}]`, '  capabilities = ["pull", "resolve"]', '');
  await mkdir(join(hostsDir, host), { recursive: true });
  await writeFile(join(hostsDir, host, 'hosts.toml'), lines.join('\n'));
}

/** Options for {@link makeRunnableImageLayout}. */
export interface RunnableImageOptions {
  /** The tag in the layout's `index.json`. */
  tag: string;
  /** Size of the random file in the one layer (fresh bytes each call, so the digests are new). Default 64 KiB. */
  fileSize?: number;
}

/** What {@link makeRunnableImageLayout} wrote. */
export interface RunnableImage {
  tag: string;
  /** The manifest digest (what the tag points at). */
  manifest: string;
  /** The config digest (containerd's image ID). */
  config: string;
  /** The gzip layer's digest. */
  layer: string;
  /** The layer's diff ID (digest of the uncompressed tar). */
  diffId: string;
}

/** The OCI architecture name of this machine. */
export function ociArch(): string {
  return process.arch === 'x64' ? 'amd64' : process.arch;
}

/** One ustar header block (POSIX.1-1988) for a regular file. */
function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  const field = (offset: number, length: number, value: string) => h.write(value, offset, length, 'ascii');
  const octal = (offset: number, length: number, n: number) => field(offset, length, `${n.toString(8).padStart(length - 1, '0')}\0`);
  field(0, 100, name);
  octal(100, 8, 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, 1_700_000_000);
  field(148, 8, '        '); // checksum is computed with its own field as spaces
  field(156, 1, '0');
  field(257, 6, 'ustar\0');
  field(263, 2, '00');
  let sum = 0;
  for (const b of h) sum += b;
  field(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return h;
}

/** A tar archive of files (each padded to 512 bytes, then the two zero end blocks). */
function tarOf(files: Array<{ name: string; data: Buffer }>): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    parts.push(tarHeader(f.name, f.data.length), f.data, Buffer.alloc((512 - (f.data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/**
 * Writes a single-layer image for this machine's platform into the OCI layout at `dir` (created if missing, other
 * tags kept): one gzip tar layer with `/payload.bin` (random) and `/tag.txt`, an OCI config and manifest. Runtimes
 * can unpack it, so `ctr image pull`, CRI PullImage and `docker pull` complete.
 */
export async function makeRunnableImageLayout(dir: string, options: RunnableImageOptions): Promise<RunnableImage> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const put = async (bytes: Buffer): Promise<string> => {
    const digest = sha256(bytes);
    await writeFile(join(blobs, digest.slice('sha256:'.length)), bytes);
    return digest;
  };
  const tar = tarOf([
    { name: 'payload.bin', data: randomBytes(options.fileSize ?? 64 * 1024) },
    { name: 'tag.txt', data: Buffer.from(`${options.tag}\n`) },
  ]);
  const diffId = sha256(tar);
  const gz = gzipSync(tar);
  const layer = await put(gz);
  const configBytes = Buffer.from(
    JSON.stringify({
      created: '2026-01-01T00:00:00Z',
      architecture: ociArch(),
      os: 'linux',
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/payload.bin'] },
      rootfs: { type: 'layers', diff_ids: [diffId] },
      history: [{ created: '2026-01-01T00:00:00Z', created_by: 'berth e2e test' }],
    }),
  );
  const config = await put(configBytes);
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: configBytes.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer, size: gz.length }],
    }),
  );
  const manifest = await put(manifestBytes);
  const index = await readLayoutIndex(dir);
  const manifests = index.manifests.filter((m) => m.annotations?.[REF_NAME] !== options.tag);
  manifests.push({
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    digest: manifest,
    size: manifestBytes.length,
    annotations: { [REF_NAME]: options.tag },
  });
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
  return { tag: options.tag, manifest, config, layer, diffId };
}
