// Bundles the CLI (dist/cli/main.js, tsc's output) into dist/bundle/ for the bin shims.
// Why: a CLI start loaded ~70 modules (ours and commander's), and Node's ESM resolution and
// linking of each cost more than the command itself for quick runs: `vmforge-img info` took
// ~95 ms against ~67 ms bundled (bench/img-inspect.mjs, README). Code splitting keeps the lazy
// loading of subcommands and subprograms (src/cli/img/index.ts, src/cli/subprograms.ts).
// The library entry (dist/index.js) stays tsc's output. Output stays one directory below dist/,
// like dist/block/, because src/block/native.ts finds the addon at ../../build/Release.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

// commander imports node:child_process (for executable subcommands, which vmforge does not use)
// and node:util (for one function) at load time: ~2.5 ms of every start, mostly child_process
// pulling in net, dgram and the stream machinery. Give commander lazy stand-ins that load the
// real module on first use (process.getBuiltinModule, Node >= 22.3).
const lazyBuiltins = {
  'node:child_process':
    "export default new Proxy({}, { get: (_, key) => process.getBuiltinModule('node:child_process')[key] });",
  'node:util':
    "export function stripVTControlCharacters(s) { return process.getBuiltinModule('node:util').stripVTControlCharacters(s); }",
};
const lazyBuiltinsForCommander = {
  name: 'lazy-builtins-for-commander',
  setup(b) {
    b.onResolve({ filter: /^node:(child_process|util)$/ }, (args) =>
      /[\\/]node_modules[\\/]commander[\\/]/.test(args.importer)
        ? { path: args.path, namespace: 'lazy-builtin' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => ({
      contents: lazyBuiltins[args.path],
      loader: 'js',
    }));
  },
};
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
  plugins: [lazyBuiltinsForCommander],
});

// vmforge-img as one CommonJS file, loaded by bin/code-cache.cjs with a V8 code cache made after
// a successful run, so it holds the functions that run needed and not only the eagerly compiled
// ones (Node's own compile cache is made right after compiling). Measured on a 1 MiB convert:
// 63 ms with the split ES modules and Node's compile cache, 46 ms this way (docs/img-convert.md).
// One file because ES modules cannot be given a code cache by hand (vm.Module is experimental),
// and because a CommonJS bundle has no module graph to resolve and link.
const imgBundle = join(outdir, 'img.cjs');
await build({
  absWorkingDir: root,
  entryPoints: ['dist/cli/img-bin.js'],
  outfile: imgBundle,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node22.19',
  keepNames: true,
  // The sources use import.meta.url (the native addon, ora, the package root); the bundle is
  // run with a CommonJS wrapper whose __filename is the bundle's path (the prologue below).
  define: { 'import.meta.url': '__vmforgeMetaUrl' },
  // Any other import.meta property would be undefined in CommonJS: fail the build instead.
  logOverride: { 'empty-import-meta': 'error' },
  logLevel: 'warning',
  plugins: [lazyBuiltinsForCommander],
});
// The first line names the bundle's content (SHA-256 of the rest): the key of its code cache.
// V8 checks a code cache against the source's length only, so the key has to say which source.
// "use strict" must open the code (a banner would come before esbuild's and void it): the
// sources are ES modules and were written for strict mode.
const prologue =
  '"use strict";\nconst __vmforgeMetaUrl = require("node:url").pathToFileURL(__filename).href;\n';
const body = prologue + readFileSync(imgBundle, 'utf8');
// bin/code-cache.cjs compiles the bundle with vm.Script, where import() goes through Node's
// default loader; esbuild turns every import() of ours into require(), so none should be left.
if (/\bimport\(/.test(body)) throw new Error(`${imgBundle}: import() left in the CommonJS bundle`);
const sha = createHash('sha256').update(body).digest('hex');
writeFileSync(imgBundle, `// vmforge-bundle ${sha}\n${body}`);
