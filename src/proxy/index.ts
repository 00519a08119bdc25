import type { Config } from '../config/config.js';
import { parseProxySettings } from './config.js';
import { PullThroughCache, type PullThrough, type PullThroughDeps } from './pull-through.js';

export type { MirrorUpstreamStatus, PullThrough, PullThroughDeps } from './pull-through.js';
export { parseProxySettings, type ProxySettings, type UpstreamSettings } from './config.js';

/**
 * The pull-through cache `config.proxy` describes, or null when there is no `proxy` section (or it names no
 * upstream). Parsing errors are ConfigErrors naming the key; warnings go to `config.warnings`. Call `start()` once
 * the app is ready (background expiry) and `close()` on shutdown.
 */
export function createPullThrough(config: Config, deps: PullThroughDeps): PullThrough | null {
  if (!config.proxy) return null;
  const settings = parseProxySettings(config.proxy, (m) => {
    config.warnings.push(m);
    deps.logger.warn(m);
  });
  if (!settings) return null;
  return new PullThroughCache(settings, deps);
}
