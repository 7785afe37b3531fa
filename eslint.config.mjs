// Lint keeps the data flowing one way (see docs/architecture.md):
// protocol imports nothing of ours; sal imports only protocol; only cli imports coord;
// supervisor and runner never import each other; no deep imports; no cycles.
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

const PKGS = ['protocol', 'sal', 'supervisor', 'runner', 'coord', 'cli'];
const deep = { group: ['@writ/*/*'], message: 'Import a package through its index (@writ/name), never its internals.' };
const outside = PKGS.map((p) => ({ group: [`**/${p}/src/**`, `../${p}/**`, `../../${p}/**`], message: `Import @writ/${p}, not its files.` }));
const forbid = (names, why) => names.map((n) => ({ group: [`@writ/${n}`], message: why }));

function layer(pkg, banned, why) {
  return {
    files: [`${pkg}/src/**/*.ts`],
    rules: {
      'no-restricted-imports': ['error', { patterns: [deep, ...outside.filter((o) => !o.group[0].includes(`/${pkg}/`)), ...forbid(banned, why)] }],
    },
  };
}

export default [
  { ignores: ['**/node_modules/**', 'scripts/examples/**', '.writ/**', 'efi-image/build/**'] },
  ...tseslint.configs.recommended,
  {
    plugins: { 'import-x': importX },
    settings: { 'import-x/extensions': ['.ts', '.js', '.mjs'], 'import-x/resolver': { node: { extensions: ['.ts', '.js', '.mjs'] } } },
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  // Type-aware rules, on the TypeScript that tsconfig.json checks (the typed program comes from the project
  // service). A promise nobody awaits loses its rejection: an unhandled rejection ends the process, and an
  // awaited-too-late one reorders effects. `void` marks a fire-and-forget call whose errors are handled.
  {
    files: ['**/*.ts'],
    // The files tests lint from memory (ESLint.lintText) are on no disk, so no tsconfig lists them:
    // tests/house-checks.test.ts's probes get tsconfig.json's options (allowDefaultProject); the `x.ts` probes
    // of tests/boundaries.test.ts check import rules only and skip the typed program altogether.
    ignores: ['*/src/x.ts'],
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ['*/src/lint-probe.ts', 'tests/lint-probe.test.ts'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: true }],
      '@typescript-eslint/no-misused-promises': 'error',
    },
  },
  layer('protocol', ['sal', 'supervisor', 'runner', 'coord', 'cli'], 'protocol is the contract and imports nothing of ours.'),
  layer('sal', ['supervisor', 'runner', 'coord', 'cli'], 'sal imports only protocol.'),
  layer('supervisor', ['runner', 'coord', 'cli', 'sal'], 'supervisor and runner meet only through Redis; nothing imports coord.'),
  layer('runner', ['supervisor', 'coord', 'cli'], 'runner and supervisor meet only through Redis; nothing imports coord.'),
  layer('coord', ['runner', 'cli', 'sal'], 'coord talks to supervisors through their client interface; only cli composes coord with a runner.'),
  layer('cli', [], ''),
  {
    files: ['tests/**/*.ts', 'bench/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [deep, ...outside] }] },
  },
];
