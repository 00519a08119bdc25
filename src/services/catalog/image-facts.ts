import type { Digest } from '../../oci/digest.js';
import { parseManifest, type ParsedManifest } from '../../oci/manifest.js';
import type { StorageDriver } from '../../storage/driver.js';
import { statOrNull } from '../../storage/driver-utils.js';
import { paths } from '../../storage/paths.js';
import type { RegistryStore } from '../../storage/registry-store.js';

/**
 * Facts about images read from storage for the catalog index, the JSON API and the UI. Everything taken from an
 * image (labels, annotations, history, env) was written by whoever pushed it: it is bounded in size here and only
 * ever returned as data.
 */

/** Longest string taken from an image; longer ones are cut. */
export const MAX_FIELD_CHARS = 4096;
/** Most entries taken from one map or list of an image (labels, env, history, annotations). */
export const MAX_FIELD_ENTRIES = 512;
/** Largest image config read (bigger ones are reported as absent). */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

export const DESCRIPTION_ANNOTATION = 'org.opencontainers.image.description';

/** A JSON object (not an array, not null). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A string cut to `max` characters, or null when `v` is not a string. */
export function boundedString(v: unknown, max = MAX_FIELD_CHARS): string | null {
  return typeof v === 'string' ? v.slice(0, max) : null;
}

/**
 * The string entries of a map, bounded in count and length. Keys are defined as own data properties, so a label
 * named `__proto__` stays a label.
 */
export function boundedStringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!isRecord(v)) return out;
  let n = 0;
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') continue;
    if (++n > MAX_FIELD_ENTRIES) break;
    Object.defineProperty(out, k.slice(0, MAX_FIELD_CHARS), {
      value: val.slice(0, MAX_FIELD_CHARS),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

/** The string entries of a list, bounded; null when `v` is not a list. */
export function boundedStringList(v: unknown): string[] | null {
  if (!Array.isArray(v)) return null;
  return v
    .filter((x): x is string => typeof x === 'string')
    .slice(0, MAX_FIELD_ENTRIES)
    .map((s) => s.slice(0, MAX_FIELD_CHARS));
}

/** `os/arch[/variant]`, or "" when os or architecture is missing. */
export function platformString(p: unknown): string {
  if (!isRecord(p)) return '';
  const os = boundedString(p.os, 64);
  const arch = boundedString(p.architecture, 64);
  if (!os || !arch) return '';
  const variant = boundedString(p.variant, 64);
  return variant ? `${os}/${arch}/${variant}` : `${os}/${arch}`;
}

/** A manifest of `repo` with its parsed form and raw JSON body, or null. */
export interface LoadedManifest {
  digest: Digest;
  bytes: Buffer;
  parsed: ParsedManifest;
  body: Record<string, unknown>;
}

/** Reads a manifest of `repo` and parses it (null when the repository does not have it or it does not parse). */
export async function loadManifest(store: RegistryStore, repo: string, d: Digest): Promise<LoadedManifest | null> {
  const m = await store.getManifest(repo, d);
  if (!m) return null;
  try {
    const parsed = parseManifest(m.bytes);
    const body: unknown = JSON.parse(m.bytes.toString('utf8'));
    return isRecord(body) ? { digest: d, bytes: m.bytes, parsed, body } : null;
  } catch {
    return null;
  }
}

/** The image config blob as JSON, or null when absent, too big or not JSON. */
export async function readConfig(driver: StorageDriver, d: Digest): Promise<Record<string, unknown> | null> {
  const info = await statOrNull(driver, paths.blobData(d));
  if (!info || info.isDir || info.size > MAX_CONFIG_BYTES) return null;
  try {
    const v: unknown = JSON.parse((await driver.getContent(paths.blobData(d))).toString('utf8'));
    return isRecord(v) ? v : null;
  } catch {
    return null;
  }
}

/** What the catalog shows of one manifest (a tag's target, or an untagged one). */
export interface ManifestFacts {
  digest: string;
  mediaType: string;
  /** The bytes a pull moves: the manifest, its config and layers; for an index, every child too. */
  size: number;
  platforms: string[];
  created: string | null;
  description: string;
  /** Every digest a pull of it fetches, with its size (for repository totals without double counting). */
  parts: Map<string, number>;
}

/** How many children of an index are read for sizes and platforms. */
const MAX_CHILDREN = 64;

/** Reads the facts of a manifest of `repo` (null when the repository does not have it). */
export async function manifestFacts(store: RegistryStore, driver: StorageDriver, repo: string, d: Digest): Promise<ManifestFacts | null> {
  const m = await loadManifest(store, repo, d);
  if (!m) return null;
  const parts = new Map<string, number>([[d.value, m.bytes.length]]);
  const facts: ManifestFacts = { digest: d.value, mediaType: m.parsed.mediaType, size: 0, platforms: [], created: null, description: '', parts };
  const annotation = boundedString(m.parsed.annotations?.[DESCRIPTION_ANNOTATION]);
  if (m.parsed.isIndex) {
    const rawChildren = Array.isArray(m.body.manifests) ? m.body.manifests : [];
    for (const [i, child] of m.parsed.children.slice(0, MAX_CHILDREN).entries()) {
      parts.set(child.digest.value, child.size);
      const platform = platformString(isRecord(rawChildren[i]) ? (rawChildren[i] as Record<string, unknown>).platform : undefined);
      if (platform && platform !== 'unknown/unknown' && !facts.platforms.includes(platform)) facts.platforms.push(platform);
      const sub = await loadManifest(store, repo, child.digest);
      if (!sub || sub.parsed.isIndex) continue;
      for (const b of sub.parsed.blobs) parts.set(b.digest.value, b.size);
      if (facts.created === null || (!facts.description && !annotation)) {
        const config = sub.parsed.blobs[0] ? await readConfig(driver, sub.parsed.blobs[0].digest) : null;
        if (facts.created === null) facts.created = boundedString(config?.created, 64);
        if (!facts.description)
          facts.description = boundedString(sub.parsed.annotations?.[DESCRIPTION_ANNOTATION]) ?? labelOf(config, DESCRIPTION_ANNOTATION) ?? '';
      }
    }
  } else {
    for (const b of m.parsed.blobs) parts.set(b.digest.value, b.size);
    const configDesc = m.parsed.blobs[0];
    const config = configDesc ? await readConfig(driver, configDesc.digest) : null;
    const platform = platformString(config);
    if (platform) facts.platforms.push(platform);
    facts.created = boundedString(config?.created, 64);
    facts.description = labelOf(config, DESCRIPTION_ANNOTATION) ?? '';
  }
  if (annotation) facts.description = annotation;
  facts.size = [...parts.values()].reduce((a, b) => a + b, 0);
  return facts;
}

/** A label of an image config (`config.Labels`), bounded; null when absent. */
export function labelOf(config: Record<string, unknown> | null, key: string): string | null {
  const inner = config && isRecord(config.config) ? config.config : null;
  const labels = inner && isRecord(inner.Labels) ? inner.Labels : null;
  return labels ? boundedString(labels[key]) : null;
}

/** When a tag was last written: the modification time of its `current/link`, null when unknown. */
export async function tagPushedAt(driver: StorageDriver, repo: string, tag: string): Promise<Date | null> {
  const info = await statOrNull(driver, paths.tagCurrentLink(repo, tag));
  return info ? info.modTime : null;
}
