import { defineConfig } from 'vitest/config';

// Tests that need Redis, root, qemu or PostgreSQL say so in their file name
// (`*.redis.test.ts`, `*.root.test.ts`, ...); all run in `npm test`.
export default defineConfig({
  test: {
    include: ['{protocol,sal,supervisor,runner,coord,cli,tests}/**/*.test.ts'],
    exclude: ['**/node_modules/**'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    reporters: ['default'],
  },
});
