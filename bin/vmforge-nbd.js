#!/usr/bin/env node
'use strict';
// Node >= 22.19 is required (zstd in node:zlib, current undici/commander); npx and npm scripts use the pinned Node 24.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(
    `vmforge-nbd: needs Node.js >= 22.19, found v${process.versions.node} (run it with npx, which uses the project's Node 24)\n`,
  );
  process.exitCode = 1;
} else {
  // V8's compile cache (Node >= 22.1; on disk in the OS temp dir, checked against the sources)
  // saves parsing and compiling the CLI's modules at every start; NODE_DISABLE_COMPILE_CACHE=1
  // turns it off.
  import('node:module')
    .then((m) => m.enableCompileCache?.())
    .catch(() => undefined)
    .then(() => import('../dist/bundle/main.js'))
    .then((m) => m.runBin('nbd'));
}
