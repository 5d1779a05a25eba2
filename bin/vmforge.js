#!/usr/bin/env node
'use strict';
// Node >= 22.19 is required (zstd in node:zlib, current undici/commander); npx and npm scripts use the pinned Node 24.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(
    `vmforge: needs Node.js >= 22.19, found v${process.versions.node} (run it with npx, which uses the project's Node 24)\n`,
  );
  process.exitCode = 1;
} else if (process.argv[2] === 'img') {
  // `vmforge img ARGS` is `vmforge-img ARGS`: the same bundle and code cache.
  const { loadBundle } = require('./code-cache.cjs');
  const bundle = require('node:path').join(__dirname, '..', 'dist', 'bundle', 'img.cjs');
  loadBundle(bundle, 'img', process.argv[3]).runImgBin(process.argv.slice(3));
} else {
  // V8's compile cache (Node >= 22.1; on disk in the OS temp dir, checked against the sources)
  // saves parsing and compiling the CLI's modules at every start; NODE_DISABLE_COMPILE_CACHE=1
  // turns it off.
  import('node:module')
    .then((m) => m.enableCompileCache?.())
    .catch(() => undefined)
    .then(() => import('../dist/bundle/main.js'))
    .then((m) => m.runBin('vmforge'));
}
