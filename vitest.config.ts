import { defineConfig } from 'vitest/config';

// Two projects: fast unit tests, and interop/e2e tests that drive real QEMU and libnbd tools.
// The interop project runs files one at a time: the machines have two cores and the tools are heavy.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          // test/fixtures holds fake /proc trees whose symlinks (cwd -> /root) lead out of the
          // repository: never look for tests there.
          exclude: ['test/interop/**', 'test/e2e/**', 'test/fixtures/**', '**/node_modules/**'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'interop',
          include: ['test/interop/**/*.test.ts', 'test/e2e/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
