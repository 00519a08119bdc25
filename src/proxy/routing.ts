import { isValidName } from '../oci/reference.js';
import { servesRepository, type ProxySettings, type UpstreamSettings } from './config.js';

/** A request that an upstream serves: which upstream, the name there, and where the cache keeps it locally. */
export interface MirrorTarget {
  upstream: UpstreamSettings;
  /** Repository name at the upstream (`library/ubuntu`). */
  remoteName: string;
  /** Repository the cached content is linked into locally. */
  localName: string;
  /** The `ns` value to echo as `OCI-Namespace`, when the request selected the upstream with `?ns=`. */
  namespace?: string;
}

/** The outcome of routing: mirrored, local (berth's own repositories) or refused (an `ns` that serves nothing). */
export type Route = { kind: 'mirror'; target: MirrorTarget } | { kind: 'local' } | { kind: 'unknown'; namespace: string };

/**
 * Decides which requests the pull-through cache answers. Storage layout: the default upstream's content is cached
 * under the requested name (`library/ubuntu` as a Docker daemon mirror asks for it), every other upstream's under
 * `<upstream name>/<name>` (`ghcr.io/org/app`), so both shapes share one cache:
 *
 * 0. With Distribution's single-upstream form (`proxy.remoteurl`), `?ns=` is ignored as registry:2 ignores it: every
 *    `ns` maps to the one upstream, so a chained mirror (remoteurl: a company's or regional Docker Hub mirror)
 *    answers containerd's `?ns=docker.io` exactly as a Docker daemon's plain request. The namespace is still echoed.
 * 1. `?ns=<host>` (containerd's mirror shape) selects the upstream with that name or alias. A name it does not serve,
 *    or an `ns` no upstream claims, is unknown (404): the request is for another registry's content, which berth
 *    neither has nor may substitute with a same-named local or cached repository (containerd then tries the next
 *    host). containerd sends `ns` only to mirrors, never to the registry it names, so local repositories are not
 *    asked for with `ns`.
 * 2. `/v2/<upstream name>/<name>/...` selects that (non-default) upstream.
 * 3. Any other name goes to the default upstream when it serves the name, else it is local.
 *
 * `repositories` globs are matched against the upstream's name (`library/ubuntu` for Docker Hub's `ubuntu`).
 */
export class Router {
  private readonly byAlias = new Map<string, UpstreamSettings>();
  private readonly byPrefix = new Map<string, UpstreamSettings>();

  constructor(private readonly settings: ProxySettings) {
    for (const u of settings.upstreams) {
      for (const a of u.aliases) this.byAlias.set(a, u);
      if (!u.isDefault) this.byPrefix.set(u.prefix, u);
    }
  }

  /** The upstream an `ns` value selects, if any. */
  upstreamFor(ns: string): UpstreamSettings | undefined {
    return this.byAlias.get(ns.toLowerCase());
  }

  route(name: string, ns: string | undefined): Route {
    if (ns !== undefined && ns !== '') {
      const u = this.settings.singleUpstream ? this.settings.defaultUpstream : this.upstreamFor(ns);
      if (!u || !servesRepository(u, remoteNameOf(u, name))) return { kind: 'unknown', namespace: ns };
      const localName = u.isDefault ? name : `${u.prefix}/${name}`;
      if (!isValidName(localName)) return { kind: 'unknown', namespace: ns };
      return { kind: 'mirror', target: { upstream: u, remoteName: remoteNameOf(u, name), localName, namespace: ns } };
    }
    const slash = name.indexOf('/');
    if (slash > 0) {
      const u = this.byPrefix.get(name.slice(0, slash));
      if (u) {
        const remoteName = remoteNameOf(u, name.slice(slash + 1));
        if (!servesRepository(u, remoteName)) return { kind: 'local' };
        return { kind: 'mirror', target: { upstream: u, remoteName, localName: name } };
      }
    }
    const d = this.settings.defaultUpstream;
    if (d && servesRepository(d, remoteNameOf(d, name)))
      return { kind: 'mirror', target: { upstream: d, remoteName: remoteNameOf(d, name), localName: name } };
    return { kind: 'local' };
  }
}

/** Docker Hub keeps official images under `library/`: a one-component name means `library/<name>` there. */
function remoteNameOf(u: UpstreamSettings, name: string): string {
  return u.dockerHub && !name.includes('/') ? `library/${name}` : name;
}
