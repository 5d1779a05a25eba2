#!/usr/bin/env node
// Node >= 22.19 is required (zstd in node:zlib, current undici/commander); npx and npm scripts use the pinned Node 24.
if (Number(process.versions.node.split('.')[0]) < 22) {
  process.stderr.write(
    `vmforge-nbd: needs Node.js >= 22.19, found v${process.versions.node} (run it with npx, which uses the project's Node 24)\n`,
  );
  process.exitCode = 1;
} else {
  import('../dist/cli/main.js').then((m) => m.runBin('nbd'));
}
