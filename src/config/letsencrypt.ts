import { ConfigError, isSection, optString, stringList, type RawSection } from './fields.js';

/** Let's Encrypt's production directory, the default of `http.tls.letsencrypt.directoryurl`. */
export const LETSENCRYPT_DIRECTORY = 'https://acme-v02.api.letsencrypt.org/directory';

/** The keys of `http.tls.letsencrypt`, as Distribution names them. */
export const LETSENCRYPT_KEYS = ['cachefile', 'email', 'hosts', 'directoryurl'] as const;

/** `http.tls.letsencrypt`: certificates obtained and renewed with ACME. */
export interface LetsEncryptSettings {
  /** Where the account key, the certificate and its key are kept between restarts (a file, written 0600). */
  cacheFile: string;
  /** Contact address for the ACME account (expiry notices). */
  email?: string;
  /** The host names the certificate is for; berth orders for these only. */
  hosts: string[];
  /** The ACME directory URL. */
  directoryUrl: string;
}

/**
 * Parses `http.tls.letsencrypt`. Returns null when the section is absent or empty. Fails closed: `cachefile` and at
 * least one host are required (without a host list any name a client sends could make the registry order a
 * certificate), and the directory must be an https URL.
 */
export function parseLetsEncrypt(tls: RawSection, warn: (msg: string) => void): LetsEncryptSettings | null {
  const raw = tls.letsencrypt;
  if (raw === undefined || raw === null || raw === '') return null;
  const path = 'http.tls.letsencrypt.';
  if (!isSection(raw)) throw new ConfigError(`http.tls.letsencrypt: expected a section, got ${JSON.stringify(raw)}`);
  if (Object.keys(raw).length === 0) return null;
  for (const key of Object.keys(raw)) {
    if (!(LETSENCRYPT_KEYS as readonly string[]).includes(key)) warn(`${path}${key}: unknown configuration key, ignored`);
  }
  const cacheFile = optString(raw, 'cachefile', path);
  if (cacheFile === undefined) throw new ConfigError(`${path}cachefile: required with http.tls.letsencrypt`);
  const hosts = stringList(raw, 'hosts', path).map((h) => h.trim().toLowerCase());
  if (hosts.length === 0) throw new ConfigError(`${path}hosts: list the host names to obtain a certificate for`);
  for (const h of hosts) {
    if (!/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(h)) {
      throw new ConfigError(`${path}hosts: ${JSON.stringify(h)} is not a host name`);
    }
  }
  const directoryUrl = optString(raw, 'directoryurl', path) ?? LETSENCRYPT_DIRECTORY;
  let url: URL;
  try {
    url = new URL(directoryUrl);
  } catch {
    throw new ConfigError(`${path}directoryurl: not a URL: ${JSON.stringify(directoryUrl)}`);
  }
  if (url.protocol !== 'https:') throw new ConfigError(`${path}directoryurl: an ACME directory is an https URL, got ${JSON.stringify(directoryUrl)}`);
  const settings: LetsEncryptSettings = { cacheFile, hosts, directoryUrl };
  const email = optString(raw, 'email', path);
  if (email !== undefined) settings.email = email;
  return settings;
}
