#!/usr/bin/env node
'use strict';
// Node >= 22.19 is required (zstd in node:zlib, current undici/commander); npx and npm scripts use the pinned Node 24.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(
    `vmforge-img: needs Node.js >= 22.19, found v${process.versions.node} (run it with npx, which uses the project's Node 24)\n`,
  );
  process.exitCode = 1;
} else {
  // The img commands are one CommonJS bundle run with a V8 code cache (code-cache.cjs says why).
  const { loadBundle } = require('./code-cache.cjs');
  const bundle = require('node:path').join(__dirname, '..', 'dist', 'bundle', 'img.cjs');
  loadBundle(bundle, 'img', process.argv[2]).runImgBin();
}
