import type { RequestContext } from '../../registry/request-context.js';

/**
 * The browse service: everything the JSON API (`/api/v1/`) and the web UI show about what is stored, and the delete
 * operations they offer. Route plugins reach it as `app.berth.browser`.
 *
 * Every string that comes from an image (labels, annotations, history) is untrusted: it is returned as data,
 * bounded in size, never interpreted. Errors are the domain errors (`RegistryError` NAME_UNKNOWN,
 * MANIFEST_UNKNOWN, UNSUPPORTED when deletes are disabled, ...).
 */

/** One repository as the catalog index knows it. */
export interface RepositorySummary {
  name: string;
  /** Tags that point at a manifest. */
  tagCount: number;
  /** Bytes of the distinct blobs its tags reference (manifests, configs, layers). */
  size: number;
  /** RFC 3339 time of the newest tag write, null when unknown. */
  lastPush: string | null;
}

/** One tag (or, with `untagged`, one manifest no tag points at: `name` is then ""). */
export interface TagSummary {
  name: string;
  digest: string;
  mediaType: string;
  /** The compressed bytes a pull of this tag moves (manifest, config, layers; for an index, all its children). */
  size: number;
  /** `os/arch[/variant]` of an index's children or of the image config. */
  platforms: string[];
  /** The image config's `created`, null when absent. */
  created: string | null;
  /** When the tag was last written (RFC 3339), null when unknown. */
  pushed: string | null;
}

/** A manifest with what it references, its config and its referrers. */
export interface ImageDetail {
  name: string;
  reference: string;
  digest: string;
  mediaType: string;
  size: number;
  manifest: unknown;
  config: {
    created: string | null;
    os: string | null;
    architecture: string | null;
    variant: string | null;
    env: string[];
    entrypoint: string[] | null;
    cmd: string[] | null;
    labels: Record<string, string>;
    history: { created: string | null; createdBy: string; emptyLayer: boolean; size: number | null }[];
  } | null;
  layers: { digest: string; mediaType: string; size: number }[];
  children: { digest: string; mediaType: string; platform: string; size: number }[];
  referrers: { digest: string; artifactType: string; mediaType: string; size: number; annotations: Record<string, string> }[];
}

/** What `berth du` reports, for the API and the UI. */
export interface Usage {
  repositories: { name: string; size: number; shared: number }[];
  total: number;
  reclaimable: number;
  lastGc: { at: string; bytesFreed: number } | null;
}

/**
 * Everything the JSON API and the UI show; `canPull`/`canDelete` filter by the caller's access. Deletes go through
 * the domain (`Namespace`: the repository's lock, the catalog index, events and the audit trail) as `/v2/` DELETEs
 * do; their `ctx` is the request (API, web UI) or the command that asked, which the events and audit lines name.
 */
export interface Browser {
  /** Repositories in lexical order after `last`, whose name contains `q` (case-insensitive), that `canPull`. */
  listRepositories(opts: { q?: string; n?: number; last?: string; canPull: (repo: string) => Promise<boolean> }): Promise<{
    repositories: RepositorySummary[];
    next: string | null;
  }>;
  /** Tags of `repo`, newest push first; NAME_UNKNOWN when there is no such repository. */
  listTags(repo: string, opts?: { untagged?: boolean }): Promise<TagSummary[]>;
  /** A manifest by tag or digest; MANIFEST_UNKNOWN when absent. */
  getImage(repo: string, reference: string): Promise<ImageDetail>;
  /** Removes a tag (the manifest stays); one `delete` event `{repository, tag}`. */
  deleteTag(repo: string, tag: string, ctx: RequestContext): Promise<void>;
  /** Deletes a manifest revision and the tags pointing at it; its `delete` event, then one per removed tag. */
  deleteManifest(repo: string, digest: string, ctx: RequestContext): Promise<void>;
  /**
   * Deletes tags, manifest links, layer links and upload sessions of `repo`; blobs go with the next gc. One `delete`
   * event naming only the repository.
   */
  deleteRepository(repo: string, ctx: RequestContext): Promise<void>;
  usage(): Promise<Usage>;
}
