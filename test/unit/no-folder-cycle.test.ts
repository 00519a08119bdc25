import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Linter, type Rule } from 'eslint';
import t from 'tap';
import tseslint from 'typescript-eslint';

/**
 * The lint rule that keeps the layers of src/ apart (`berth/no-folder-cycle` in eslint.config.js): a table of small
 * source trees, each with the files the rule must flag.
 */
const here = dirname(fileURLToPath(import.meta.url));
const rulePath = join(here, '../../../eslint-rules/no-folder-cycle.js');
const { noFolderCycle } = (await import(pathToFileURL(rulePath).href)) as { noFolderCycle: Rule.RuleModule };

const rows: Array<[name: string, tree: Record<string, string>, flagged: string[]]> = [
  [
    'layers importing downwards only',
    {
      'oci/digest.ts': 'export const d = 1;\n',
      'storage/store.ts': "import { d } from '../oci/digest.js';\nexport const s = d;\n",
      'http/routes.ts': "import { s } from '../storage/store.js';\nimport { d } from '../oci/digest.js';\nexport const r = s + d;\n",
      'app.ts': "import { r } from './http/routes.js';\nexport const app = r;\n",
    },
    [],
  ],
  [
    'two folders importing each other',
    {
      'oci/digest.ts': "import { s } from '../storage/store.js';\nexport const d = s;\n",
      'storage/store.ts': "import { d } from '../oci/digest.js';\nexport const s = d;\n",
    },
    ['oci/digest.ts', 'storage/store.ts'],
  ],
  [
    'a loop through three folders, by different files',
    {
      'oci/a.ts': 'export const a = 1;\n',
      'oci/b.ts': "import { g } from '../gc/g.js';\nexport const b = g;\n",
      'storage/s.ts': "import { a } from '../oci/a.js';\nexport const s = a;\n",
      'gc/g.ts': "import { s } from '../storage/s.js';\nexport const g = s;\n",
    },
    ['gc/g.ts', 'oci/b.ts', 'storage/s.ts'],
  ],
  [
    'a type-only import closes a loop too',
    {
      'oci/a.ts': "import type { S } from '../storage/s.js';\nexport type A = S | 1;\n",
      'storage/s.ts': "import { a } from '../oci/a.js';\nexport type S = 2;\nexport const s = a;\n",
    },
    ['oci/a.ts', 'storage/s.ts'],
  ],
  [
    'a dynamic import and a re-export count',
    {
      'cli/main.ts': "export const run = () => import('../gc/gc.js');\n",
      'gc/gc.ts': "export * from '../cli/main.js';\n",
    },
    ['cli/main.ts', 'gc/gc.ts'],
  ],
  [
    'a file at the top of src/ is a unit of its own',
    {
      'app.ts': "import { h } from './http/h.js';\nexport const app = h;\n",
      'http/h.ts': "import { app } from '../app.js';\nexport const h = 1;\nexport const again = () => app;\n",
    },
    ['app.ts', 'http/h.ts'],
  ],
  [
    'a loop inside one folder is not this rule (import-x/no-cycle sees it)',
    {
      'storage/a.ts': "import { b } from './b.js';\nexport const a = () => b();\n",
      'storage/b.ts': "import { a } from './a.js';\nexport const b = () => a();\n",
    },
    [],
  ],
];

t.test('berth/no-folder-cycle', async (t) => {
  for (const [name, tree, flagged] of rows) {
    const dir = await mkdtemp(join(tmpdir(), 'berth-folder-cycle-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    for (const [file, text] of Object.entries(tree)) {
      await mkdir(dirname(join(dir, 'src', file)), { recursive: true });
      await writeFile(join(dir, 'src', file), text);
    }
    const linter = new Linter({ cwd: dir });
    const config: Linter.Config = {
      files: ['**/*.ts'],
      languageOptions: { parser: tseslint.parser },
      plugins: { berth: { rules: { 'no-folder-cycle': noFolderCycle } } },
      rules: { 'berth/no-folder-cycle': ['error', { root: 'src' }] },
    };
    const got: string[] = [];
    for (const [file, text] of Object.entries(tree)) {
      const messages = linter.verify(text, config, { filename: join(dir, 'src', file) });
      if (messages.some((m) => m.ruleId === 'berth/no-folder-cycle')) got.push(file);
      const other = messages.filter((m) => m.ruleId !== 'berth/no-folder-cycle');
      t.same(other, [], `${name}: ${file} parses`);
    }
    t.same(got.sort(), flagged, name);
  }
});
