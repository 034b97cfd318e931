import tseslint from 'typescript-eslint'

/** Layer boundaries (DESIGN §3): http → core → store; only store/ touches database drivers. */
const boundaries = {
  core: {
    files: ['packages/server/src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['**/http/**', '**/http/*'], message: 'core must not import the HTTP layer' },
            { group: ['**/store/sqlite/**', '**/store/postgres/**'], message: 'core uses the store interface, not an engine' },
            { group: ['better-sqlite3', 'pg', 'pg-*'], message: 'only store/ talks to database drivers' },
          ],
        },
      ],
    },
  },
  http: {
    files: ['packages/server/src/http/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['**/store/sqlite/**', '**/store/postgres/**'], message: 'routes call core, never a store engine' },
            { group: ['better-sqlite3', 'pg', 'pg-*'], message: 'only store/ talks to database drivers' },
          ],
        },
      ],
    },
  },
  store: {
    files: ['packages/server/src/store/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['**/http/**', '**/http/*'], message: 'stores only persist; they never import HTTP' }] },
      ],
    },
  },
  sdk: {
    files: ['packages/sdk/src/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['@chokepoint/server', '**/server/**'], message: 'the SDK is standalone: no server imports' },
            { group: ['node:*'], message: 'the SDK runs in browsers too: no Node built-ins' },
          ],
        },
      ],
    },
  },
  dashboard: {
    files: ['packages/dashboard/src/**/*.{ts,tsx}'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['@chokepoint/server', '**/server/**'], message: 'the console talks to the public API through the SDK only' },
            { group: ['node:*'], message: 'the console runs in a browser: no Node built-ins' },
          ],
        },
      ],
    },
  },
  cli: {
    files: ['packages/cli/src/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['**/server/src/**', '@chokepoint/server/*'], message: 'the CLI uses the public entry of the server' },
            { group: ['better-sqlite3', 'pg'], message: 'only store/ talks to database drivers' },
          ],
        },
      ],
    },
  },
}

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'bench/results/**', 'data/**', 'coverage/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      eqeqeq: ['error', 'always'],
      'no-console': 'off',
    },
  },
  {
    files: ['**/test/**/*.ts', '**/*.test.ts', 'bench/**', 'examples/**'],
    rules: { '@typescript-eslint/no-explicit-any': 'off', '@typescript-eslint/no-non-null-assertion': 'off' },
  },
  ...Object.values(boundaries),
)
