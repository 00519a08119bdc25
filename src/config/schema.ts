import { ConfigError, isSection, type RawSection } from './fields.js';

/**
 * The keys berth knows, one table per section, checked before anything is read. Adding an option is one line: its
 * key in the table of its section (and a table of its own when it is a section whose keys are checked too).
 *
 * A key is one of
 * - `use`: berth reads it (a nested section with its own table is checked with that table),
 * - `ignore`: a registry:2 option berth does not act on and that is harmless to drop; loading warns,
 * - `retired`: an option of an earlier berth that no longer does anything and is harmless to drop; loading warns,
 * - a string: refused; the string says why (a registry:2 option whose absence would weaken security or move data).
 *
 * A key that is in no table of its section is a typo or an option berth does not have: in a `strict` section
 * (where a dropped key could open access or move data) it stops startup, elsewhere it warns.
 */
// eslint-disable-next-line @typescript-eslint/no-redundant-type-constituents -- the two words are the rule's vocabulary; any other string is a refusal
export type KeyRule = 'use' | 'ignore' | 'retired' | string;

/** The keys of one section. */
export interface SectionSchema {
  /** Unknown keys stop startup instead of warning. Applies to the sections nested in this one too. */
  strict?: boolean;
  keys: Readonly<Record<string, KeyRule>>;
}

const NO_STORAGE_DRIVER = 'berth has no such storage driver (it has filesystem and s3); data would land somewhere else';
const NO_AUTH = 'berth has no such authentication (it has htpasswd, token and builtin); the registry would be open';

/**
 * Sections by dotted path; `[]` marks the entries of a list (`proxy.upstreams[]`). Sections not listed here
 * (`log.fields`, `http.headers`, `auth.builtin.groups`, `index`, ...) are free-form or checked by their owner.
 */
export const CONFIG_SCHEMA: Readonly<Record<string, SectionSchema>> = {
  '': {
    strict: true,
    keys: {
      version: 'use',
      log: 'use',
      storage: 'use',
      http: 'use',
      redis: 'use',
      auth: 'use',
      proxy: 'use',
      berth: 'use',
      notifications: 'use',
      ui: 'use',
      audit: 'use',
      index: 'use',
      // registry:2 sections berth has no counterpart for and whose absence is harmless.
      loglevel: 'ignore',
      reporting: 'ignore',
      health: 'ignore',
      middleware: 'ignore',
      validation: 'ignore',
      compatibility: 'ignore',
      catalog: 'ignore',
    },
  },
  log: { keys: { level: 'use', formatter: 'use', fields: 'use', accesslog: 'use', hooks: 'ignore', reportcaller: 'ignore' } },
  'log.accesslog': { keys: { disabled: 'use' } },

  storage: {
    strict: true,
    keys: {
      filesystem: 'use',
      s3: 'use',
      delete: 'use',
      redirect: 'use',
      maintenance: 'use',
      cache: 'ignore',
      tag: 'ignore',
      inmemory: NO_STORAGE_DRIVER,
      azure: NO_STORAGE_DRIVER,
      gcs: NO_STORAGE_DRIVER,
      swift: NO_STORAGE_DRIVER,
      oss: NO_STORAGE_DRIVER,
    },
  },
  'storage.filesystem': { keys: { rootdirectory: 'use', maxthreads: 'ignore', directwrites: 'use' } },
  'storage.s3': {
    keys: {
      accesskey: 'use',
      secretkey: 'use',
      sessiontoken: 'use',
      region: 'use',
      regionendpoint: 'use',
      forcepathstyle: 'use',
      bucket: 'use',
      rootdirectory: 'use',
      chunksize: 'use',
      multipartcopychunksize: 'use',
      multipartcopymaxconcurrency: 'use',
      multipartcopythresholdsize: 'use',
      encrypt: 'use',
      keyid: 'use',
      secure: 'use',
      skipverify: 'use',
      v4auth: 'use',
      storageclass: 'use',
      objectacl: 'use',
      usedualstack: 'use',
      accelerate: 'use',
      useragent: 'use',
      loglevel: 'ignore',
      checksum_disabled: 'ignore',
      checksum_algorithm: 'ignore',
      logging: 'ignore',
      // berth extras
      redirectexpiry: 'use',
      maxattempts: 'use',
      connecttimeout: 'use',
      requesttimeout: 'use',
      multipartuploadmaxconcurrency: 'use',
    },
  },
  'storage.delete': { keys: { enabled: 'use' } },
  'storage.redirect': { keys: { disable: 'use' } },
  'storage.maintenance': { keys: { uploadpurging: 'use', readonly: 'use' } },
  'storage.maintenance.uploadpurging': { keys: { enabled: 'use', age: 'use', interval: 'use', dryrun: 'use' } },
  'storage.maintenance.readonly': { keys: { enabled: 'use' } },

  http: {
    keys: {
      addr: 'use',
      host: 'use',
      secret: 'use',
      headers: 'use',
      tls: 'use',
      debug: 'use',
      net: 'ignore',
      prefix: 'ignore',
      http2: 'ignore',
      relativeurls: 'ignore',
      draintimeout: 'ignore',
      h2c: 'ignore',
    },
  },
  'http.tls': {
    strict: true,
    keys: {
      certificate: 'use',
      key: 'use',
      clientcas: 'use',
      minimumtls: 'use',
      letsencrypt: 'use',
      ciphersuites: 'berth does not translate Go cipher suite names; remove it to use Node.js defaults (TLS 1.2+, AEAD ciphers)',
    },
  },
  'http.tls.letsencrypt': { keys: { cachefile: 'use', email: 'use', hosts: 'use', directoryurl: 'use' } },
  'http.debug': { keys: { addr: 'use', prometheus: 'use' } },
  'http.debug.prometheus': { keys: { enabled: 'use', path: 'use' } },

  redis: {
    strict: true,
    keys: {
      addr: 'use',
      username: 'use',
      password: 'use',
      db: 'use',
      keyprefix: 'use',
      dialtimeout: 'ignore',
      readtimeout: 'ignore',
      writetimeout: 'ignore',
      pool: 'ignore',
      tls: 'berth connects to Redis without TLS; remove redis.tls (or put a TLS tunnel in front)',
    },
  },

  auth: {
    strict: true,
    keys: { htpasswd: 'use', token: 'use', builtin: 'use', ratelimit: 'use', silly: NO_AUTH },
  },
  'auth.htpasswd': { keys: { realm: 'use', path: 'use' } },
  'auth.token': {
    keys: {
      realm: 'use',
      service: 'use',
      issuer: 'use',
      rootcertbundle: 'use',
      jwks: 'use',
      autoredirect: 'use',
      autoredirectpath: 'use',
      signingalgorithms: 'use',
    },
  },
  'auth.builtin': {
    keys: {
      users: 'use',
      rules: 'use',
      groups: 'use',
      key: 'use',
      certificate: 'use',
      expiration: 'use',
      refreshexpiration: 'use',
      service: 'use',
      issuer: 'use',
    },
  },
  'auth.ratelimit': { keys: { failures: 'use', window: 'use' } },

  proxy: {
    strict: true,
    keys: {
      remoteurl: 'use',
      username: 'use',
      password: 'use',
      ttl: 'use',
      tagttl: 'use',
      timeout: 'use',
      repositories: 'use',
      upstreams: 'use',
      expiryinterval: 'use',
      // Fills are written only into storage's upload area now (issue 15).
      spooldirectory: 'retired',
    },
  },
  'proxy.upstreams[]': {
    keys: {
      name: 'use',
      url: 'use',
      username: 'use',
      password: 'use',
      ttl: 'use',
      tagttl: 'use',
      repositories: 'use',
      default: 'use',
      timeout: 'use',
      aliases: 'use',
    },
  },

  notifications: { keys: { events: 'use', endpoints: 'use' } },
  ui: { keys: { enabled: 'use' } },
  audit: { keys: { file: 'use' } },

  berth: {
    keys: {
      automaticcrossmount: 'use',
      uploadsessionttl: 'use',
      shutdowntimeout: 'use',
      idletimeout: 'use',
      metrics: 'use',
      gc: 'use',
      audit: 'use',
      index: 'use',
      linkcache: 'use',
    },
  },
  'berth.audit': { keys: { file: 'use' } },
  'berth.linkcache': { keys: { ttl: 'use', entries: 'use' } },
  'berth.metrics': { keys: { enabled: 'use', path: 'use', addr: 'use' } },
  'berth.gc': { keys: { interval: 'use', grace: 'use', deleteuntagged: 'use', uploadage: 'use' } },
};

/** Sections that must be mappings when present (a string there is a mistake, e.g. `proxy: https://...`). */
function mustBeSection(schemaPath: string): boolean {
  return CONFIG_SCHEMA[schemaPath] !== undefined;
}

/**
 * Checks every key of `raw` against {@link CONFIG_SCHEMA}: returns warnings for ignored and (outside strict
 * sections) unknown keys, throws a {@link ConfigError} naming the first refused or (inside a strict section) unknown
 * key, or a section given as a scalar.
 */
export function checkSchema(raw: RawSection, schema: Readonly<Record<string, SectionSchema>> = CONFIG_SCHEMA): string[] {
  const warnings: string[] = [];
  const visit = (node: RawSection, schemaPath: string, shownPath: string, strict: boolean): void => {
    const table = schema[schemaPath];
    if (!table) return;
    const inStrict = strict || table.strict === true;
    for (const [key, value] of Object.entries(node)) {
      const shown = shownPath === '' ? key : `${shownPath}.${key}`;
      const rule = table.keys[key];
      if (rule === undefined) {
        if (inStrict) throw new ConfigError(`${shown}: unknown key${suggest(key, Object.keys(table.keys))}; berth stops rather than ignore it here`);
        warnings.push(`${shown}: unknown configuration key, ignored`);
        continue;
      }
      if (rule === 'ignore') {
        warnings.push(`${shown}: accepted for registry:2 compatibility but not used by berth`);
        continue;
      }
      if (rule === 'retired') {
        warnings.push(`${shown}: no longer used by this version of berth; remove it`);
        continue;
      }
      if (rule !== 'use') throw new ConfigError(`${shown}: not supported: ${rule}`);
      if (value === undefined || value === null) continue;
      const childPath = schemaPath === '' ? key : `${schemaPath}.${key}`;
      if (isSection(value)) {
        // The top level's strictness covers its own keys (unknown sections), not every section below it.
        visit(value, childPath, shown, schemaPath === '' ? false : inStrict);
      } else if (Array.isArray(value) && schema[`${childPath}[]`]) {
        value.forEach((entry, i) => {
          if (!isSection(entry)) throw new ConfigError(`${shown}[${i}]: expected a mapping, got ${JSON.stringify(entry)}`);
          visit(entry, `${childPath}[]`, `${shown}[${i}]`, schemaPath === '' ? false : inStrict);
        });
      } else if (mustBeSection(childPath) && value !== '') {
        throw new ConfigError(`${shown}: expected a section, got ${JSON.stringify(value)}`);
      }
    }
  };
  visit(raw, '', '', false);
  return warnings;
}

/** ` (did you mean "x"?)` for a key one or two edits away from a known one. */
function suggest(key: string, known: string[]): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k);
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best === undefined ? '' : ` (did you mean "${best}"?)`;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}
