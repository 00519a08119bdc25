import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { tryParseDigest } from '../oci/digest.js';
import { parseManifest, type Descriptor } from '../oci/manifest.js';
import { isValidName, isValidTag, type Reference } from '../oci/reference.js';
import type { Namespace } from '../registry/repository.js';

/** An image to warm: `name[:tag|@digest]`, optionally with a registry host (`ghcr.io/org/app:1`, `ubuntu`). */
export interface WarmImage {
  /** The registry host it names (its `?ns=`), undefined when the image has none. */
  ns: string | undefined;
  /** The repository name as a mirror is asked for it (`library/ubuntu` for Docker Hub's `ubuntu`). */
  name: string;
  reference: Reference;
  /** The argument as given. */
  input: string;
}

/** A platform filter, `os/arch[/variant]`. */
export interface WarmPlatform {
  os: string;
  architecture: string;
  variant?: string;
}

/** One step of a warm-up, for progress output. */
export type WarmEvent =
  | { kind: 'image'; image: string; digest: string }
  | { kind: 'manifest'; image: string; digest: string; platform?: string }
  /** The configs and layers an image needs (after its manifests were read), before they are fetched. */
  | { kind: 'planned'; image: string; blobs: number; bytes: number }
  | { kind: 'blob'; image: string; digest: string; bytes: number }
  | { kind: 'skipped'; image: string; digest: string; platform: string }
  | { kind: 'failed'; image: string; error: string };

/** What {@link warmUp} did. */
export interface WarmResult {
  images: number;
  failed: number;
  manifests: number;
  blobs: number;
  bytes: number;
}

/**
 * Parses an image argument. A first component with a dot or a colon, or `localhost`, is a registry host (as docker
 * reads it); without one, or with docker.io, a one-component name is Docker Hub's `library/<name>`. No tag means
 * `latest`. Throws an Error naming the argument when it is not an image reference.
 */
export function parseWarmImage(input: string): WarmImage {
  let rest = input.trim();
  let ns: string | undefined;
  const slash = rest.indexOf('/');
  if (slash > 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      ns = first.toLowerCase();
      rest = rest.slice(slash + 1);
    }
  }
  let reference: Reference = { kind: 'tag', tag: 'latest' };
  const at = rest.indexOf('@');
  if (at >= 0) {
    const digest = tryParseDigest(rest.slice(at + 1));
    if (!digest) throw new Error(`${JSON.stringify(input)}: invalid digest`);
    reference = { kind: 'digest', digest };
    rest = rest.slice(0, at);
  } else {
    const colon = rest.lastIndexOf(':');
    if (colon > rest.lastIndexOf('/')) {
      const tag = rest.slice(colon + 1);
      if (!isValidTag(tag)) throw new Error(`${JSON.stringify(input)}: invalid tag`);
      reference = { kind: 'tag', tag };
      rest = rest.slice(0, colon);
    }
  }
  const hub = ns === undefined || ns === 'docker.io' || ns === 'index.docker.io';
  const name = hub && !rest.includes('/') ? `library/${rest}` : rest;
  if (!isValidName(name)) throw new Error(`${JSON.stringify(input)}: invalid repository name`);
  return { ns, name, reference, input };
}

/** Parses `os/arch[/variant]`. */
export function parseWarmPlatform(raw: string): WarmPlatform {
  const [os, architecture, variant, extra] = raw.split('/');
  if (!os || !architecture || extra !== undefined) throw new Error(`${JSON.stringify(raw)}: expected os/arch or os/arch/variant, e.g. linux/amd64`);
  return variant ? { os, architecture, variant } : { os, architecture };
}

/** The `platform` of each entry of an index's `manifests`, by digest (the parsed descriptors do not keep it). */
function indexPlatforms(bytes: Buffer): Map<string, WarmPlatform> {
  const out = new Map<string, WarmPlatform>();
  const body = JSON.parse(bytes.toString('utf8')) as {
    manifests?: Array<{ digest?: unknown; platform?: { os?: unknown; architecture?: unknown; variant?: unknown } }>;
  };
  for (const m of body.manifests ?? []) {
    const p = m.platform;
    if (typeof m.digest !== 'string' || !p || typeof p.os !== 'string' || typeof p.architecture !== 'string') continue;
    out.set(
      m.digest,
      typeof p.variant === 'string' ? { os: p.os, architecture: p.architecture, variant: p.variant } : { os: p.os, architecture: p.architecture },
    );
  }
  return out;
}

function matches(want: WarmPlatform, have: WarmPlatform | undefined): boolean {
  // Entries without a platform (attestations, artifacts) are not images of another platform: keep them.
  if (!have) return true;
  return have.os === want.os && have.architecture === want.architecture && (want.variant === undefined || have.variant === want.variant);
}

function platformText(p: WarmPlatform | undefined): string | undefined {
  return p ? [p.os, p.architecture, p.variant].filter(Boolean).join('/') : undefined;
}

/**
 * Fetches images into the pull-through cache ahead of need, through the same namespace the API serves (so fills
 * are shared with concurrent pulls, verified against their digests and linked as a client's pull would link them):
 * the manifest (or index and, for each platform, or only `platform`'s, its manifests), then every config and
 * layer, read to the end. Already cached content is read from storage and costs no upstream transfer. An image
 * that fails is reported (`failed`) and the others still run.
 */
export async function warmUp(
  namespace: Namespace,
  images: WarmImage[],
  options: { platform?: WarmPlatform; onEvent?: (e: WarmEvent) => void; signal?: AbortSignal } = {},
): Promise<WarmResult> {
  const result: WarmResult = { images: 0, failed: 0, manifests: 0, blobs: 0, bytes: 0 };
  const emit = options.onEvent ?? (() => undefined);
  for (const image of images) {
    options.signal?.throwIfAborted();
    try {
      const repo = namespace.repository(image.name, image.ns);
      const top = await repo.manifests.get(image.reference);
      if (!top) throw new Error('manifest unknown');
      emit({ kind: 'image', image: image.input, digest: top.digest.value });
      result.manifests++;
      const parsed = parseManifest(top.bytes, top.mediaType);
      const manifests: Array<{ blobs: Descriptor[] }> = [];
      if (parsed.isIndex) {
        const platforms = indexPlatforms(top.bytes);
        for (const child of parsed.children) {
          const d = child.digest;
          const have = platforms.get(d.value);
          const platform = platformText(have);
          if (options.platform && !matches(options.platform, have)) {
            emit({ kind: 'skipped', image: image.input, digest: d.value, platform: platform ?? '' });
            continue;
          }
          const m = await repo.manifests.get({ kind: 'digest', digest: d });
          if (!m) throw new Error(`manifest ${d.value} unknown`);
          result.manifests++;
          emit({ kind: 'manifest', image: image.input, digest: d.value, ...(platform ? { platform } : {}) });
          const p = parseManifest(m.bytes, m.mediaType);
          if (!p.isIndex) manifests.push({ blobs: p.blobs });
        }
      } else {
        manifests.push({ blobs: parsed.blobs });
      }
      const seen = new Set<string>();
      const planned: Descriptor[] = [];
      for (const m of manifests) {
        for (const b of m.blobs) {
          // Foreign layers (with urls) need not be in any registry.
          if (seen.has(b.digest.value) || (b.urls && b.urls.length > 0)) continue;
          seen.add(b.digest.value);
          planned.push(b);
        }
      }
      emit({ kind: 'planned', image: image.input, blobs: planned.length, bytes: planned.reduce((sum, b) => sum + b.size, 0) });
      for (const b of planned) {
        const d = b.digest;
        options.signal?.throwIfAborted();
        const content = await repo.blobs.get(d, { headOnly: false });
        if (!content) throw new Error(`blob ${d.value} unknown`);
        let bytes = 0;
        await pipeline(
          await content.open(0, undefined),
          new Writable({
            write(chunk: Buffer, _enc, done) {
              bytes += chunk.length;
              done();
            },
          }),
          options.signal ? { signal: options.signal } : {},
        );
        result.blobs++;
        result.bytes += bytes;
        emit({ kind: 'blob', image: image.input, digest: d.value, bytes });
      }
      result.images++;
    } catch (err) {
      if (options.signal?.aborted) throw err;
      result.failed++;
      emit({ kind: 'failed', image: image.input, error: (err as Error).message });
    }
  }
  return result;
}
