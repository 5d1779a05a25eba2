// Build the optional native helper (native/fileops.c) with node-gyp. Never fails the install:
// without a compiler vmforge runs in pure JavaScript (sparse-file holes then show as data).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const wanted = process.platform === 'linux' && process.env.VMFORGE_NO_NATIVE !== '1';
const gyp = process.env.npm_config_node_gyp;
const cmd =
  gyp && existsSync(gyp) ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']];
const r = wanted
  ? spawnSync(cmd[0], cmd[1], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' })
  : { status: 0 };
if (r.status !== 0) {
  process.stderr.write(
    'vmforge: optional native helper not built (needs python3, make, a C compiler); ' +
      'continuing in pure JavaScript.\n',
  );
}
