// ESLint flat config. `npm run lint` runs it with `prettier --check`; formatting itself is Prettier's job, so no
// stylistic rules here.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import { importX } from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';
import berth from './eslint-rules/no-folder-cycle.js';

export default defineConfig(
  { ignores: ['dist/', 'node_modules/', 'data/', '.tap/', 'test/fixtures/'] },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
  },
  {
    rules: {
      // Unused names start with `_` (kept for a destructuring that drops fields, or a signature).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // A caught value is rethrown as it came.
      '@typescript-eslint/only-throw-error': ['error', { allowThrowingUnknown: true, allowRethrowing: true }],
      // Noise for this code base: async methods that implement an interface without awaiting, assertions kept for
      // the reader, `String(x)` on values typed unknown, an initial value that a try block replaces.
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
      '@typescript-eslint/no-base-to-string': 'off',
      'no-useless-assignment': 'off',
    },
  },
  {
    // tap runs the subtests it is handed (t.test() returns a promise nobody needs to await).
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-floating-promises': 'off' },
  },
  {
    // Callbacks handed to the browser (page.evaluate, $$eval) use DOM types the Node test project does not load.
    files: ['test/ui/ui-browser.test.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
    },
  },
  {
    // The folders of src/ form layers (oci → storage → registry → services → http → app/cli): no import cycles.
    files: ['src/**/*.ts'],
    plugins: { 'import-x': importX, berth },
    settings: {
      ...importX.flatConfigs.typescript.settings,
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })],
    },
    rules: { 'import-x/no-cycle': 'error', 'berth/no-folder-cycle': ['error', { root: 'src' }] },
  },
  {
    // The UI's browser script has its own tsconfig (DOM types, no Node).
    files: ['src/http/ui/browser/**/*.ts'],
    languageOptions: { parserOptions: { projectService: false, project: './tsconfig.browser.json', tsconfigRootDir: import.meta.dirname } },
  },
  { files: ['**/*.js'], extends: [tseslint.configs.disableTypeChecked] },
);
