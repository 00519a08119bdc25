import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { parseAllDocuments } from 'yaml';

/**
 * The small part of kustomize that berth's manifests use, so the tests can build each overlay without the
 * kustomize binary: `resources` (local files and directories only), `patches` with a `path` to a strategic
 * merge patch, and `configMapGenerator` with `files` (and `behavior: replace` in an overlay), whose ConfigMap gets
 * kustomize's content-hash name suffix, referenced by the pod templates. Anything else in a kustomization.yaml is refused, so a manifest change that needs more of
 * kustomize fails here instead of being validated wrongly.
 */

/** A Kubernetes object as parsed from YAML. */
export type K8sObject = Record<string, unknown> & { apiVersion: string; kind: string; metadata: { name: string } & Record<string, unknown> };

/** What building one kustomization directory produced, and which files it read. */
export interface Build {
  objects: K8sObject[];
  /** Every file the build read (kustomization files, resources, patches), absolute. */
  files: Set<string>;
  /** The patch files among them. */
  patches: Set<string>;
  /** The files configMapGenerator read (berth config files, not Kubernetes objects). */
  generatorFiles: Set<string>;
}

const SUPPORTED_KEYS = new Set(['apiVersion', 'kind', 'resources', 'patches', 'configMapGenerator']);

/** The ConfigMaps a build generated, by their name before the hash suffix. */
const GENERATED = new WeakSet<object>();

/**
 * kustomize's name suffix for a generated ConfigMap: the first 10 hex digits of the SHA-256 of
 * `{"data":…,"kind":"ConfigMap","name":""}` as Go's encoding/json writes it (HTML characters escaped), with
 * 0/1/3/a/e replaced by g/h/k/m/t.
 */
export function configMapHash(data: Record<string, string>): string {
  const sorted = Object.fromEntries(
    Object.keys(data)
      .sort()
      .map((k) => [k, data[k]]),
  );
  const json = JSON.stringify({ data: sorted, kind: 'ConfigMap', name: '' })
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
  const hex = createHash('sha256').update(json).digest('hex').slice(0, 10);
  return hex.replace(/[013ae]/g, (c) => ({ '0': 'g', '1': 'h', '3': 'k', a: 'm', e: 't' })[c] ?? c);
}

/** The repository root: the nearest directory above `from` with berth's package.json. */
export function repoRoot(from: string): string {
  let dir = from;
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'berth') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`no berth package.json above ${from}`);
    dir = up;
  }
}

/** True for plain objects (YAML mappings). */
export function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses every document of a YAML file; empty documents are skipped; a syntax error throws naming the file. */
export function readYamlDocs(file: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  const out: unknown[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value: unknown = doc.toJS();
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

/** Checks that a YAML document is a complete object (apiVersion, kind, metadata.name). */
export function asObject(doc: unknown, where: string): K8sObject {
  if (!isMap(doc)) throw new Error(`${where}: not a mapping`);
  const meta = doc.metadata;
  if (typeof doc.apiVersion !== 'string' || typeof doc.kind !== 'string' || !isMap(meta) || typeof meta.name !== 'string') {
    throw new Error(`${where}: not a complete object (apiVersion, kind and metadata.name are required)`);
  }
  return doc as K8sObject;
}

/** `kind/name` (with apiVersion) identifying an object in a build. */
export function idOf(o: { apiVersion: unknown; kind: unknown; metadata?: unknown }): string {
  const name = isMap(o.metadata) ? String(o.metadata.name) : '?';
  return `${String(o.apiVersion)} ${String(o.kind)}/${name}`;
}

/**
 * Resolves a `resources` or `patches` entry: it must be a relative local path that exists and stays inside
 * `confine` (the deploy/kubernetes tree). Remote bases (URLs, `github.com/...`) are refused.
 */
export function localPath(dir: string, entry: unknown, confine: string, what: string): string {
  if (typeof entry !== 'string' || entry === '') throw new Error(`${what}: expected a path, got ${JSON.stringify(entry)}`);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(entry) || /^(github\.com|gitlab\.com|bitbucket\.org)\//.test(entry) || entry.includes('?ref=')) {
    throw new Error(`${what}: ${entry} is a remote base; only local files are allowed`);
  }
  if (entry.startsWith('/')) throw new Error(`${what}: ${entry} must be relative`);
  const full = resolve(dir, entry);
  const rel = relative(confine, full);
  if (rel.startsWith('..') || rel.startsWith(sep)) throw new Error(`${what}: ${entry} leaves ${confine}`);
  if (!existsSync(full)) throw new Error(`${what}: ${entry} does not exist`);
  return full;
}

/** Patch merge keys of the lists berth's manifests patch (Kubernetes' `x-kubernetes-patch-merge-key`). */
function mergeKeyFor(field: string, items: unknown[]): string | undefined {
  switch (field) {
    case 'containers':
    case 'initContainers':
    case 'volumes':
    case 'env':
    case 'imagePullSecrets':
      return 'name';
    case 'volumeMounts':
      return 'mountPath';
    case 'ports':
      // Container ports merge on containerPort, Service ports on port.
      return items.some((i) => isMap(i) && 'containerPort' in i) ? 'containerPort' : 'port';
    default:
      return undefined;
  }
}

/**
 * Strategic merge of `patch` into `base` (a copy is returned): maps merge key by key, `null` deletes a key, lists
 * with a patch merge key merge item by item (`$patch: delete` removes one), other lists and scalars replace.
 */
export function strategicMerge(base: unknown, patch: unknown, field = ''): unknown {
  if (isMap(base) && isMap(patch)) {
    const out: Record<string, unknown> = { ...base };
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) delete out[k];
      else out[k] = k in base ? strategicMerge(base[k], v, k) : stripDirectives(v);
    }
    return out;
  }
  if (Array.isArray(base) && Array.isArray(patch)) {
    const key = mergeKeyFor(field, [...(base as unknown[]), ...(patch as unknown[])]);
    if (key === undefined) return stripDirectives(patch);
    const out: unknown[] = [...(base as unknown[])];
    for (const item of patch) {
      if (!isMap(item) || !(key in item)) throw new Error(`patch of ${field}: each item needs its merge key ${key}`);
      const at = out.findIndex((b) => isMap(b) && b[key] === item[key]);
      if (item.$patch === 'delete') {
        if (at >= 0) out.splice(at, 1);
      } else if (at >= 0) {
        out[at] = strategicMerge(out[at], item, field);
      } else {
        out.push(stripDirectives(item));
      }
    }
    return out;
  }
  return stripDirectives(patch);
}

/** Removes `null` values (deletions with nothing to delete) and `$patch` directives from new content. */
function stripDirectives(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripDirectives);
  if (isMap(v)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (x !== null && k !== '$patch') out[k] = stripDirectives(x);
    return out;
  }
  return v;
}

/**
 * Builds the kustomization in `dir` (recursively through directory resources), confined to `confine`, then names
 * generated ConfigMaps by their content and points the pod templates at those names, as kustomize does.
 */
export function build(dir: string, confine: string): Build {
  const out = buildTree(dir, confine, []);
  const renamed = new Map<string, string>();
  out.objects = out.objects.map((o) => {
    if (!GENERATED.has(o)) return o;
    const name = `${o.metadata.name}-${configMapHash(o.data as Record<string, string>)}`;
    renamed.set(o.metadata.name, name);
    return { ...o, metadata: { ...o.metadata, name } };
  });
  if (renamed.size > 0) out.objects = out.objects.map((o) => renameConfigMapReferences(o, renamed));
  return out;
}

/** Rewrites ConfigMap names in pod templates (volumes, env, envFrom) of Deployments, StatefulSets and CronJobs. */
function renameConfigMapReferences(o: K8sObject, renamed: Map<string, string>): K8sObject {
  const rename = (v: unknown, key: string): void => {
    if (isMap(v) && typeof v[key] === 'string' && renamed.has(v[key])) v[key] = renamed.get(v[key]);
  };
  const copy = JSON.parse(JSON.stringify(o)) as K8sObject;
  const spec = isMap(copy.spec) ? copy.spec : {};
  const jobTemplate = isMap(spec.jobTemplate) && isMap(spec.jobTemplate.spec) ? spec.jobTemplate.spec : {};
  for (const template of [spec.template, jobTemplate.template]) {
    if (!isMap(template) || !isMap(template.spec)) continue;
    const pod = template.spec;
    for (const v of Array.isArray(pod.volumes) ? pod.volumes : []) if (isMap(v)) rename(v.configMap, 'name');
    for (const c of [
      ...(Array.isArray(pod.containers) ? (pod.containers as unknown[]) : []),
      ...(Array.isArray(pod.initContainers) ? (pod.initContainers as unknown[]) : []),
    ]) {
      if (!isMap(c)) continue;
      for (const e of Array.isArray(c.env) ? c.env : []) if (isMap(e) && isMap(e.valueFrom)) rename(e.valueFrom.configMapKeyRef, 'name');
      for (const e of Array.isArray(c.envFrom) ? c.envFrom : []) if (isMap(e)) rename(e.configMapRef, 'name');
    }
  }
  return copy;
}

/** A `configMapGenerator` entry: a ConfigMap whose keys are file names and values the files' text. */
function generate(dir: string, confine: string, entry: unknown, kfile: string): { object: K8sObject; behavior: string; file: string[] } {
  if (!isMap(entry) || typeof entry.name !== 'string') throw new Error(`${kfile}: configMapGenerator entries need a name`);
  for (const key of Object.keys(entry)) {
    if (!['name', 'files', 'behavior'].includes(key))
      throw new Error(`${kfile}: configMapGenerator ${key} is not modelled by this test's kustomize subset`);
  }
  const behavior = entry.behavior === undefined ? 'create' : String(entry.behavior);
  if (!['create', 'replace'].includes(behavior)) throw new Error(`${kfile}: configMapGenerator behavior ${behavior} is not modelled`);
  if (!Array.isArray(entry.files) || entry.files.length === 0) throw new Error(`${kfile}: configMapGenerator ${entry.name} needs files`);
  const data: Record<string, string> = {};
  const read: string[] = [];
  for (const f of entry.files) {
    if (typeof f !== 'string' || f.includes('=')) throw new Error(`${kfile}: configMapGenerator files are plain relative paths here`);
    const full = localPath(dir, f, confine, `${kfile} configMapGenerator`);
    read.push(full);
    data[f.split('/').pop() ?? f] = readFileSync(full, 'utf8');
  }
  const object = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: entry.name }, data } as K8sObject;
  GENERATED.add(object);
  return { object, behavior, file: read };
}

function buildTree(dir: string, confine: string, seen: string[]): Build {
  const kfile = join(dir, 'kustomization.yaml');
  if (!existsSync(kfile)) throw new Error(`${dir}: no kustomization.yaml`);
  if (seen.includes(dir)) throw new Error(`${dir}: kustomization cycle`);
  const [k, ...more] = readYamlDocs(kfile);
  if (!isMap(k) || more.length > 0) throw new Error(`${kfile}: expected one mapping`);
  if (k.apiVersion !== 'kustomize.config.k8s.io/v1beta1' || k.kind !== 'Kustomization') {
    throw new Error(`${kfile}: expected apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization`);
  }
  for (const key of Object.keys(k)) {
    if (!SUPPORTED_KEYS.has(key)) throw new Error(`${kfile}: ${key} is not modelled by this test's kustomize subset`);
  }
  const files = new Set<string>([kfile]);
  const patchFiles = new Set<string>();
  const generatorFiles = new Set<string>();
  const objects: K8sObject[] = [];
  const resources = k.resources ?? [];
  if (!Array.isArray(resources)) throw new Error(`${kfile}: resources must be a list`);
  for (const entry of resources) {
    const full = localPath(dir, entry, confine, `${kfile} resources`);
    if (statSync(full).isDirectory()) {
      const sub = buildTree(full, confine, [...seen, dir]);
      sub.files.forEach((f) => files.add(f));
      sub.patches.forEach((f) => patchFiles.add(f));
      sub.generatorFiles.forEach((f) => generatorFiles.add(f));
      objects.push(...sub.objects);
    } else {
      files.add(full);
      readYamlDocs(full).forEach((doc, i) => objects.push(asObject(doc, `${full} document ${i + 1}`)));
    }
  }
  const generators = k.configMapGenerator ?? [];
  if (!Array.isArray(generators)) throw new Error(`${kfile}: configMapGenerator must be a list`);
  for (const entry of generators) {
    const { object, behavior, file } = generate(dir, confine, entry, kfile);
    file.forEach((f) => (files.add(f), generatorFiles.add(f)));
    const at = objects.findIndex((o) => idOf(o) === idOf(object));
    if (behavior === 'replace') {
      if (at < 0 || !GENERATED.has(objects[at]!))
        throw new Error(`${kfile}: configMapGenerator ${object.metadata.name} replaces nothing generated below`);
      objects[at] = object;
    } else {
      objects.push(object);
    }
  }
  const ids = new Set<string>();
  for (const o of objects) {
    if (ids.has(idOf(o))) throw new Error(`${kfile}: ${idOf(o)} appears twice`);
    ids.add(idOf(o));
  }
  const patches = k.patches ?? [];
  if (!Array.isArray(patches)) throw new Error(`${kfile}: patches must be a list`);
  for (const p of patches) {
    if (!isMap(p) || Object.keys(p).some((x) => x !== 'path')) {
      throw new Error(`${kfile}: only patches with a path (strategic merge files) are modelled`);
    }
    const full = localPath(dir, p.path, confine, `${kfile} patches`);
    files.add(full);
    patchFiles.add(full);
    for (const doc of readYamlDocs(full)) {
      const patch = asObject(doc, full);
      const at = objects.findIndex((o) => idOf(o) === idOf(patch));
      if (at < 0) throw new Error(`${full}: patches ${idOf(patch)}, which the build does not contain`);
      const merged = strategicMerge(objects[at], patch) as K8sObject;
      if (GENERATED.has(objects[at]!)) GENERATED.add(merged);
      objects[at] = merged;
    }
  }
  return { objects, files, patches: patchFiles, generatorFiles };
}
