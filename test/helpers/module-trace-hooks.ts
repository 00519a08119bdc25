/** The loader hooks of module-trace.ts (they run on the loader's own thread): records each resolved URL once. */
import { appendFileSync } from 'node:fs';
import type { InitializeHook, ResolveHook } from 'node:module';

let file: string | undefined;
const seen = new Set<string>();

export const initialize: InitializeHook<{ file: string }> = (data) => {
  file = data.file;
};

export const resolve: ResolveHook = async (specifier, context, nextResolve) => {
  const result = await nextResolve(specifier, context);
  if (file !== undefined && !seen.has(result.url)) {
    seen.add(result.url);
    // Written at once, so the list is complete whenever the test reads it (also while the process runs).
    appendFileSync(file, `${result.url}\n`);
  }
  return result;
};
