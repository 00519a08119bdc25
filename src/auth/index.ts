import type { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { AuditLog } from '../events/audit.js';
import type { StorageDriver } from '../storage/driver.js';
import { AllowAllAuthorizer, type Authorizer } from './authorizer.js';
import { BasicAuthorizer } from './basic.js';
import { HtpasswdStore } from './htpasswd.js';
import { FailureLimiter } from './rate-limit.js';
import { RulesSource } from './rules.js';
import { parseAuthSettings, SAFE_ALGORITHMS } from './settings.js';
import { loadSigner, type TokenSigner } from './signer.js';
import { realmFromRequest, TokenAuthorizer, type RealmResolver } from './token-authorizer.js';
import { TokenIssuer } from './token-server.js';
import { TrustStore } from './trust.js';
import { RegistryError } from '../errors/registry-error.js';
import { TokenVerifier } from './verifier.js';

/** What {@link createAuth} gives the app: the authorizer for `/v2/`, and berth's token server when enabled. */
export interface AuthModule {
  authorizer: Authorizer;
  /** The built-in token server: the app serves it on `/auth/token`, `/auth/jwks.json`, `/auth/cert.pem` (http/token-routes.ts). */
  tokenServer?: { issuer: TokenIssuer; signer: TokenSigner };
  /**
   * Checks a user's password for the web UI's login form (the htpasswd users of `auth.htpasswd` or
   * `auth.builtin.users`), rate-limited per client address with the same limiter as the token server and Basic auth;
   * resolves the account or throws UNAUTHORIZED / TOOMANYREQUESTS. Absent when berth has no users (external issuer).
   */
  login?: (ip: string, name: string, password: string) => Promise<string>;
  close(): Promise<void>;
}

export interface AuthDeps {
  driver: StorageDriver;
  logger: Logger;
  /** The audit trail: token grants and failed logins. */
  audit?: AuditLog;
  /** Host directory of the filesystem driver's root, so a generated signing key gets mode 0600. */
  storageRoot?: string;
}

/**
 * Builds authentication from `config.auth` (see `settings.ts` for every key):
 * - no `auth` section: everything allowed;
 * - `auth.htpasswd` alone: HTTP Basic against the htpasswd file;
 * - `auth.token` and/or `auth.builtin`: Bearer tokens; `auth.builtin` also serves berth's own token server, whose
 *   key the registry trusts in addition to `auth.token.rootcertbundle` / `auth.token.jwks`.
 */
export async function createAuth(config: Config, deps: AuthDeps): Promise<AuthModule> {
  if (config.auth === undefined) return { authorizer: new AllowAllAuthorizer(), close: async () => {} };
  const logger = deps.logger.child({ component: 'auth' });
  const settings = parseAuthSettings(config.auth, (msg) => logger.warn(msg));
  const limiter = new FailureLimiter(settings.rateLimit.failures, settings.rateLimit.windowMs);

  if (!settings.token && !settings.builtin) {
    const htpasswd = settings.htpasswd;
    if (!htpasswd) return { authorizer: new AllowAllAuthorizer(), close: async () => {} };
    const users = new HtpasswdStore(htpasswd.path, logger);
    await users.refresh();
    const authorizer = new BasicAuthorizer(users, htpasswd.realm, limiter, deps.audit);
    /** The web UI's password check: the same users, the same failed-login limits per address and account. */
    const login = async (ip: string, name: string, password: string): Promise<string> => {
      const attempt = await limiter.begin(ip, name);
      let ok = false;
      try {
        ok = await users.verify(name, password);
      } finally {
        if (ok) attempt.succeeded();
        else attempt.failed();
      }
      if (!ok) {
        deps.audit?.record('login failure', { user: name, addr: ip }, { via: 'ui' });
        throw new RegistryError('UNAUTHORIZED', undefined, { message: 'invalid username or password' });
      }
      return name;
    };
    return { authorizer, login, close: () => authorizer.close() };
  }

  const token = settings.token;
  const builtin = settings.builtin;
  const defaultProto = config.http.tls ? 'https' : 'http';
  let realm: RealmResolver;
  if (token?.realm !== undefined) {
    const fixed = token.realm;
    realm = () => fixed;
  } else if (token?.autoRedirect) {
    realm = realmFromRequest(token.autoRedirectPath, defaultProto);
  } else if (config.http.host !== undefined) {
    const fixed = `${config.http.host}/auth/token`;
    realm = () => fixed;
  } else {
    realm = realmFromRequest('/auth/token', defaultProto);
  }

  let tokenServer: AuthModule['tokenServer'];
  let login: AuthModule['login'];
  let rules: RulesSource | undefined;
  const certificates: X509Certificate[] = [];
  const issuers = new Set<string>();
  if (token) issuers.add(token.issuer);
  if (builtin) {
    const signer = await loadSigner({
      ...(builtin.key !== undefined ? { keyFile: builtin.key } : {}),
      ...(builtin.certificate !== undefined ? { certificateFile: builtin.certificate } : {}),
      driver: deps.driver,
      ...(deps.storageRoot !== undefined ? { storageRoot: deps.storageRoot } : {}),
      logger,
    });
    certificates.push(signer.certificate);
    issuers.add(builtin.issuer);
    let users: HtpasswdStore | undefined;
    if (builtin.users !== undefined) {
      users = new HtpasswdStore(builtin.users, logger);
      await users.refresh();
    } else {
      logger.warn('auth.builtin.users not set: only anonymous access rules apply');
    }
    rules = await RulesSource.create(builtin.rules, builtin.groups, logger);
    const issuer = new TokenIssuer({
      users,
      rules,
      signer,
      limiter,
      service: builtin.service,
      issuer: builtin.issuer,
      expirationMs: builtin.expirationMs,
      refreshExpirationMs: builtin.refreshExpirationMs,
      logger,
      ...(deps.audit ? { audit: deps.audit } : {}),
    });
    tokenServer = { issuer, signer };
    if (users) login = (ip, name, password) => issuer.login(ip, name, password);
    logger.info({ kid: signer.kid, alg: signer.alg }, 'token server enabled on /auth/token');
  }

  const trust = await TrustStore.create({
    ...(token?.rootCertBundle !== undefined ? { rootCertBundle: token.rootCertBundle } : {}),
    ...(token?.jwks !== undefined ? { jwks: token.jwks } : {}),
    certificates,
    logger,
  });
  const service = token?.service ?? builtin?.service ?? 'berth';
  const verifier = new TokenVerifier(trust, {
    issuers: [...issuers],
    audience: service,
    algorithms: token?.algorithms ?? [...SAFE_ALGORITHMS],
  });
  const authorizer = new TokenAuthorizer(verifier, realm, service, logger, rules);
  const result: AuthModule = { authorizer, close: () => authorizer.close() };
  if (tokenServer) result.tokenServer = tokenServer;
  if (login) result.login = login;
  return result;
}
