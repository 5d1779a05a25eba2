// Bundles the CLI (dist/cli/main.js, tsc's output) into dist/bundle/ for the bin shims.
// Why: a CLI start loaded ~70 modules (ours and commander's), and Node's ESM resolution and
// linking of each cost more than the command itself for quick runs: `vmforge-img info` took
// ~95 ms against ~67 ms bundled (bench/img-inspect.mjs, README). Code splitting keeps the lazy
// loading of subcommands and subprograms (src/cli/img/index.ts, src/cli/subprograms.ts).
// The library entry (dist/index.js) stays tsc's output. Output stays one directory below dist/,
// like dist/block/, because src/block/native.ts finds the addon at ../../build/Release.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist', 'bundle');
rmSync(outdir, { recursive: true, force: true });
await build({
  absWorkingDir: root,
  entryPoints: ['dist/cli/main.js'],
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node22.19',
  // Class and function names appear in messages and debug output; keep them.
  keepNames: true,
  // Bundled CommonJS dependencies (commander, node-stream-zip, ...) call require() for Node's
  // built-in modules; ES module output has no require, so each chunk gets one.
  banner: {
    js: "import { createRequire as __vmforgeCreateRequire } from 'node:module'; const require = __vmforgeCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
