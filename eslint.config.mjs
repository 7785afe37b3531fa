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
