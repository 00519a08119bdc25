import { readFile, stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { parse as parseYaml } from 'yaml';
import type { AccessRecord, Action } from './access.js';
import { ConfigError } from '../config/fields.js';
import { globToRegExp } from '../oci/name-glob.js';

/**
 * Access rules of berth's token server. A rule names who it applies to, one resource and the actions it allows:
 *
 * ```yaml
 * groups: { admins: [alice] }
 * rules:
 *   - { who: anonymous, repository: "public/**", actions: [pull] }
 *   - { who: authenticated, repository: "${account}/**", actions: [pull, push] }
 *   - { who: [group:admins, bob], repository: "**", actions: ["*"] }
 *   - { who: group:admins, registry: catalog, actions: ["*"] }
 * ```
 *
 * Semantics: the allowed actions for (account, resource) are the UNION of the actions of every matching rule, so
 * order does not matter and there are no deny rules. `who` is a user name, `group:NAME`, `authenticated` (any
 * logged-in user) or `anonymous` (everyone, logged in or not: a user can always do what an anonymous client can).
 * `repository` is a glob: `*` matches within one path component, `**` across components, `${account}` is the
 * user's name (such a rule never matches anonymous clients). `registry: catalog` grants `registry:catalog:*`.
 * Actions: `pull`, `push`, `delete`, `*` (all).
 *
 * Without any rules configured, authenticated users may do everything (as Distribution's htpasswd) and anonymous
 * clients nothing.
 */
export interface AccessRule {
  who: string[];
  type: 'repository' | 'registry';
  /** Glob for repositories, `catalog` for the registry type. */
  pattern: string;
  actions: Action[];
}

export interface RuleSet {
  groups: Map<string, Set<string>>;
  rules: AccessRule[];
}

const ACTIONS: readonly string[] = ['pull', 'push', 'delete', '*'];

/** The rules used when none are configured. */
export const DEFAULT_RULES: AccessRule[] = [
  { who: ['authenticated'], type: 'repository', pattern: '**', actions: ['*'] },
  { who: ['authenticated'], type: 'registry', pattern: 'catalog', actions: ['*'] },
];

function fail(path: string, msg: string): never {
  throw new ConfigError(`${path}: ${msg}`);
}

function stringOrList(v: unknown, path: string): string[] {
  if (typeof v === 'string' && v !== '') return [v];
  if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string' && x !== '')) return v as string[];
  return fail(path, `expected a name or a list of names, got ${JSON.stringify(v)}`);
}

/** Validates a list of raw rules; errors name the rule (`<path>[2].actions: ...`). */
export function parseRuleList(raw: unknown, path: string): AccessRule[] {
  if (!Array.isArray(raw)) fail(path, 'expected a list of rules');
  return raw.map((r, i) => {
    const p = `${path}[${i}]`;
    if (typeof r !== 'object' || r === null || Array.isArray(r)) fail(p, 'expected a mapping');
    const rule = r as Record<string, unknown>;
    for (const k of Object.keys(rule)) if (!['who', 'repository', 'registry', 'actions'].includes(k)) fail(`${p}.${k}`, 'unknown key');
    const who = stringOrList(rule.who, `${p}.who`);
    const actions = stringOrList(rule.actions, `${p}.actions`);
    for (const a of actions) if (!ACTIONS.includes(a)) fail(`${p}.actions`, `unknown action ${JSON.stringify(a)} (pull, push, delete or *)`);
    if ((rule.repository === undefined) === (rule.registry === undefined)) fail(p, 'needs exactly one of repository or registry');
    if (rule.registry !== undefined) {
      if (rule.registry !== 'catalog') fail(`${p}.registry`, `only "catalog" exists, got ${JSON.stringify(rule.registry)}`);
      return { who, type: 'registry', pattern: 'catalog', actions: actions as Action[] };
    }
    if (typeof rule.repository !== 'string' || rule.repository === '') fail(`${p}.repository`, 'expected a glob');
    return { who, type: 'repository', pattern: rule.repository, actions: actions as Action[] };
  });
}

/** Groups: name → members. */
export function parseGroups(raw: unknown, path: string): Map<string, Set<string>> {
  const groups = new Map<string, Set<string>>();
  if (raw === undefined || raw === null) return groups;
  if (typeof raw !== 'object' || Array.isArray(raw)) fail(path, 'expected a mapping of group name to members');
  for (const [name, members] of Object.entries(raw as Record<string, unknown>)) {
    groups.set(name, new Set(stringOrList(members, `${path}.${name}`)));
  }
  return groups;
}

/** A rules document: a plain list, or `{groups, rules}`. */
export function parseRulesDocument(raw: unknown, path: string): RuleSet {
  if (Array.isArray(raw)) return { groups: new Map(), rules: parseRuleList(raw, path) };
  if (typeof raw !== 'object' || raw === null) fail(path, 'expected a list of rules or {groups, rules}');
  const doc = raw as Record<string, unknown>;
  for (const k of Object.keys(doc)) if (k !== 'groups' && k !== 'rules') fail(`${path}.${k}`, 'unknown key');
  return { groups: parseGroups(doc.groups, `${path}.groups`), rules: parseRuleList(doc.rules ?? [], `${path}.rules`) };
}

function appliesTo(rule: AccessRule, account: string | undefined, groups: Map<string, Set<string>>): boolean {
  return rule.who.some((w) => {
    if (w === 'anonymous') return true;
    if (account === undefined) return false;
    if (w === 'authenticated' || w === account) return true;
    if (w.startsWith('group:')) return groups.get(w.slice(6))?.has(account) ?? false;
    return false;
  });
}

function matchesResource(rule: AccessRule, account: string | undefined, type: string, name: string): boolean {
  if (rule.type !== type) return false;
  if (type === 'registry') return name === rule.pattern;
  let glob = rule.pattern;
  if (glob.includes('${account}')) {
    if (account === undefined) return false;
    glob = glob.split('${account}').join(account.replace(/\*/g, ''));
  }
  return globToRegExp(glob).test(name);
}

/** The union of the actions every matching rule allows `account` (undefined: anonymous) on `type:name`. */
export function allowedActions(set: RuleSet, account: string | undefined, type: string, name: string): Set<Action> {
  const allowed = new Set<Action>();
  for (const rule of set.rules) {
    if (appliesTo(rule, account, set.groups) && matchesResource(rule, account, type, name)) {
      for (const a of rule.actions) allowed.add(a);
    }
  }
  return allowed;
}

/**
 * Docker token spec (auth/token.md): "it will take the intersection of the set of requested actions on each resource
 * and the set of actions that the client has in fact been granted. If the client only has a subset of the requested
 * access it must not be considered an error".
 */
export function grant(set: RuleSet, account: string | undefined, requested: AccessRecord[]): AccessRecord[] {
  const out: AccessRecord[] = [];
  for (const r of requested) {
    const allowed = allowedActions(set, account, r.type, r.name);
    const actions = r.actions.filter((a) => allowed.has('*') || allowed.has(a));
    if (actions.length > 0) out.push({ type: r.type, name: r.name, actions });
  }
  return out;
}

/**
 * Where the rules come from: inline config (fixed) or a YAML file, re-read when it changes (inode, size or
 * modification time). A file that becomes invalid is reported and the previous rules stay in force.
 */
export class RulesSource {
  private current: RuleSet;
  private stamp = '';

  private constructor(
    private readonly file: string | undefined,
    private readonly baseGroups: Map<string, Set<string>>,
    initial: RuleSet,
    private readonly logger?: Logger,
  ) {
    this.current = initial;
  }

  /** Loads the rules now; a missing or invalid file stops startup with a ConfigError. */
  static async create(rules: string | unknown[] | undefined, groups: Record<string, string[]>, logger?: Logger): Promise<RulesSource> {
    const baseGroups = parseGroups(groups, 'auth.builtin.groups');
    if (typeof rules === 'string') {
      const source = new RulesSource(rules, baseGroups, { groups: baseGroups, rules: [] }, logger);
      await source.reload(true);
      return source;
    }
    const list = rules === undefined ? DEFAULT_RULES : parseRuleList(rules, 'auth.builtin.rules');
    return new RulesSource(undefined, baseGroups, { groups: baseGroups, rules: list }, logger);
  }

  /** The rules in force, after picking up a changed file. */
  async rules(): Promise<RuleSet> {
    if (this.file) await this.reload(false);
    return this.current;
  }

  private async reload(initial: boolean): Promise<void> {
    const file = this.file as string;
    try {
      const s = await stat(file);
      const stamp = `${s.ino}:${s.size}:${s.mtimeMs}`;
      if (stamp === this.stamp) return;
      // Remember the version even if it turns out invalid: the error is reported once, not on every request.
      if (!initial) this.stamp = stamp;
      const text = await readFile(file, 'utf8');
      let doc: unknown;
      try {
        doc = parseYaml(text);
      } catch (err) {
        throw new ConfigError(`${file}: not valid YAML: ${(err as Error).message}`);
      }
      const parsed = parseRulesDocument(doc ?? [], file);
      const groups = new Map(this.baseGroups);
      for (const [k, v] of parsed.groups) groups.set(k, v);
      this.current = { groups, rules: parsed.rules };
      this.stamp = stamp;
      if (!initial) this.logger?.info({ file, rules: parsed.rules.length }, 'access rules reloaded');
    } catch (err) {
      if (initial) {
        if (err instanceof ConfigError) throw err;
        throw new ConfigError(`auth.builtin.rules: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      this.logger?.error({ file, err: (err as Error).message }, 'access rules not reloaded; keeping the previous rules');
    }
  }
}
