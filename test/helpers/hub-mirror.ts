import { MANIFEST_ACCEPT, captureAccessLog } from './containers.js';
import type { Test } from 'tap';
import { startBerth, type RunningBerth } from './berth.js';
import { makeRunnableImageLayout } from './cri.js';
import { tempDir } from './ports.js';
import { HUB_SERVICE, startTokenHub, type TokenHub } from '../proxy/helpers.js';

/** The digest the token-protected "Docker Hub" serves for `repo:tag` (null when it has none). */
export async function upstreamDigest(hub: TokenHub, repo: string, tag: string): Promise<string | null> {
  const tokenRes = await fetch(`${hub.issuer.url}/auth/token?service=${HUB_SERVICE}&scope=${encodeURIComponent(`repository:${repo}:pull`)}`);
  const { token } = (await tokenRes.json()) as { token: string };
  const res = await fetch(`${hub.registry.url}/v2/${repo}/manifests/${tag}`, {
    method: 'HEAD',
    headers: { accept: MANIFEST_ACCEPT, authorization: `Bearer ${token}` },
  });
  return res.status === 200 ? res.headers.get('docker-content-digest') : null;
}

export interface HubMirror {
  hub: TokenHub;
  /** The runnable image seeded upstream as `library/bbox:1`. */
  image: Awaited<ReturnType<typeof makeRunnableImageLayout>>;
  /** berth as the docker.io mirror of `hub`, with its access log captured. */
  berth: RunningBerth;
  log: ReturnType<typeof captureAccessLog>;
}

/**
 * A token-protected Debian docker-registry playing Docker Hub, seeded with a runnable `library/bbox:1`, and berth
 * in front of it as the docker.io pull-through mirror (what daemons and containerd are pointed at).
 */
export async function startHubMirror(t: Test, prefix: string): Promise<HubMirror> {
  const hub = await startTokenHub(t);
  const src = await tempDir(t, `${prefix}-src-`);
  const image = await makeRunnableImageLayout(src, { tag: 'bbox', fileSize: 200 * 1024 });
  await hub.seed(src, 'bbox', 'library/bbox', '1');
  const log = captureAccessLog();
  const berth = await startBerth(
    t,
    {
      log: { level: 'info', accesslog: { disabled: false } },
      proxy: { upstreams: [{ name: 'docker.io', url: hub.registry.url, repositories: ['library/**'], tagttl: '1h', timeout: '30s' }] },
    },
    { logger: log.logger },
  );
  return { hub, image, berth, log };
}
