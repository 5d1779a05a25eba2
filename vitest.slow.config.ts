import { defineConfig } from 'vitest/config';

// `npm run test:slow`: tests that take many minutes (the real edk2 build), kept out of `npm test`.
// Their files end in .slow.ts so the default projects (test/**/*.test.ts) never pick them up.
export default defineConfig({
  test: {
    include: ['test/slow/**/*.slow.ts'],
    testTimeout: 3_600_000,
    hookTimeout: 600_000,
    fileParallelism: false,
  },
});
