// ESLint rule `berth/no-folder-cycle`: the top-level folders (and files) of src/ must not import each other in a
// loop. `import-x/no-cycle` sees cycles between files only; this one sees the layers: when src/storage imports
// src/gc, nothing under src/gc may lead back to src/storage, through any number of folders. Type-only imports count
// too (a layer that knows another's types depends on it).
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

const IMPORT = /(?:^|[\s;])(?:import|export)\s[^'"`;]*?from\s*['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

/** The top-level folder or file of src/ that `file` belongs to, or null outside `root`. */
function unitOf(root, file) {
  const rel = relative(root, file);
  if (rel.startsWith('..') || rel === '') return null;
  return rel.split(sep)[0];
}

/** The .ts file a relative `.js` specifier names. */
function target(from, spec) {
  return resolve(dirname(from), spec).replace(/\.js$/, '.ts');
}

function* tsFiles(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* tsFiles(p);
    else if (e.name.endsWith('.ts')) yield p;
  }
}

const graphs = new Map();

/** The folder graph of `root`: unit → units it imports (read once per lint run). */
function folderGraph(root) {
  let g = graphs.get(root);
  if (g) return g;
  g = new Map();
  for (const file of tsFiles(root)) {
    const from = unitOf(root, file);
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT)) {
      const to = unitOf(root, target(file, m[1] ?? m[2]));
      if (to === null || to === from) continue;
      if (!g.has(from)) g.set(from, new Set());
      g.get(from).add(to);
    }
  }
  graphs.set(root, g);
  return g;
}

/** A path of units from `start` to `goal` in `g`, or null. */
function pathBetween(g, start, goal) {
  const previous = new Map([[start, null]]);
  const queue = [start];
  while (queue.length > 0) {
    const u = queue.shift();
    if (u === goal) {
      const path = [];
      for (let at = u; at !== null; at = previous.get(at)) path.unshift(at);
      return path;
    }
    for (const v of g.get(u) ?? []) {
      if (!previous.has(v)) {
        previous.set(v, u);
        queue.push(v);
      }
    }
  }
  return null;
}

/** @type {import('eslint').Rule.RuleModule} */
export const noFolderCycle = {
  meta: {
    type: 'problem',
    docs: { description: 'no import cycle between the top-level folders and files of a source root' },
    schema: [{ type: 'object', properties: { root: { type: 'string' } }, additionalProperties: false }],
    messages: {
      cycle: '{{from}} imports {{to}}, and {{back}}: the folders of {{root}}/ must not form a cycle',
    },
  },
  create(context) {
    const rootName = context.options[0]?.root ?? 'src';
    const root = resolve(context.cwd, rootName);
    const file = context.filename;
    const from = unitOf(root, file);
    if (from === null) return {};
    const check = (node, source) => {
      if (typeof source !== 'string' || !source.startsWith('.')) return;
      const to = unitOf(root, target(file, source));
      if (to === null || to === from) return;
      const back = pathBetween(folderGraph(root), to, from);
      if (back) context.report({ node, messageId: 'cycle', data: { from, to, back: back.join(' → '), root: rootName } });
    };
    return {
      ImportDeclaration: (node) => check(node, node.source.value),
      ExportNamedDeclaration: (node) => node.source && check(node, node.source.value),
      ExportAllDeclaration: (node) => check(node, node.source.value),
      ImportExpression: (node) => node.source.type === 'Literal' && check(node, node.source.value),
    };
  },
};

/** The project's local ESLint plugin. */
export default { rules: { 'no-folder-cycle': noFolderCycle } };
