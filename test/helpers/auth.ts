import { join } from 'node:path';
import { userAdd } from '../../src/auth/htpasswd.js';
import type { RawSection } from '../../src/config/fields.js';

/**
 * The users and access rules the auth end-to-end tests share: alice may do everything, bob may pull `team/**`, and
 * anyone may pull `public/**` (rules are unordered: a request is allowed when any rule allows it).
 */
export const TEAM_RULES = [
  { who: 'anonymous', repository: 'public/**', actions: ['pull'] },
  { who: 'alice', repository: '**', actions: ['*'] },
  { who: 'bob', repository: 'team/**', actions: ['pull'] },
];

/** The passwords of the users {@link writeUsers} creates by default. */
export const TEAM_USERS: Record<string, string> = { alice: 'alice-pw', bob: 'bob-pw' };

/** Writes an htpasswd file `htpasswd` in `dir` with `users` (name → password, bcrypt); returns its path. */
export async function writeUsers(dir: string, users: Record<string, string> = TEAM_USERS): Promise<string> {
  const file = join(dir, 'htpasswd');
  for (const [name, password] of Object.entries(users)) await userAdd(file, name, password);
  return file;
}

/** The `auth` config section for berth's built-in token server with `users` and {@link TEAM_RULES}, plus `extra`. */
export function builtinAuth(users: string, extra: RawSection = {}): RawSection {
  return { builtin: { users, ...extra, rules: TEAM_RULES } };
}
