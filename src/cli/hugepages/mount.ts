// vmforge hugepages mount DIR [--pagesize] [--size] [--min-size] [--nr-inodes] [--uid] [--gid]
//   [--mode] [--dry-run] [--json]   and   vmforge hugepages umount DIR [--force] [--dry-run].

import { resolve } from 'node:path';
import type { Command } from 'commander';
import { formatSize, parseSize } from '../../core/index.js';
import {
  mountHugetlbfs,
  resolveAccountId,
  umountHugetlbfs,
  type MountHugetlbfsOptions,
} from '../../hugetlbfs/index.js';
import { printActions, printJson } from './format.js';
import type { HugepagesContext } from './index.js';
import { optMode, optMountSize, optPageSize, shortIsTwo } from './options.js';

interface MountFlags {
  pagesize?: string;
  size?: string;
  minSize?: string;
  nrInodes?: string;
  uid?: string;
  gid?: string;
  mode?: string;
  dryRun?: boolean;
  json?: boolean;
}

export function registerMount(program: Command, ctx: HugepagesContext): void {
  program
    .command('mount')
    .description('mount hugetlbfs at DIR (created if needed; a matching mount is reused)')
    .argument('<DIR>', 'mount point')
    .option('--pagesize <SIZE>', 'page size of the pool to use (2M, 1G); default: the default size')
    .option('--size <SIZE>', 'most memory files on it may use: bytes with K/M/G, or N% of the pool')
    .option('--min-size <SIZE>', 'memory reserved for it at mount time (bytes or N%)')
    .option('--nr-inodes <N>', 'most files (K/M/G suffixes allowed)')
    .option('--uid <USER>', 'owner of the root directory (name or number)')
    .option('--gid <GROUP>', 'group of the root directory (name or number)')
    .option('--mode <MODE>', 'permissions of the root directory, octal (default 0755)')
    .option('--dry-run', 'print mkdir and mount commands instead of running them')
    .option('--json', 'print the result as JSON')
    .action((dirArg: string, flags: MountFlags) =>
      shortIsTwo(async () => {
        const { host, io } = ctx;
        const options: MountHugetlbfsOptions = {
          host,
          dir: resolve(io.cwd, dirArg),
          dryRun: flags.dryRun ?? false,
        };
        const pageSize = optPageSize(flags.pagesize);
        if (pageSize !== undefined) options.pageSize = pageSize;
        if (flags.size !== undefined) options.size = optMountSize(flags.size, 'size');
        if (flags.minSize !== undefined) options.minSize = optMountSize(flags.minSize, 'min size');
        if (flags.nrInodes !== undefined) {
          options.nrInodes = parseSize(flags.nrInodes, 'number of inodes', { min: 1 });
        }
        if (flags.uid !== undefined) options.uid = await resolveAccountId(host, flags.uid, 'user');
        if (flags.gid !== undefined) options.gid = await resolveAccountId(host, flags.gid, 'group');
        if (flags.mode !== undefined) options.mode = optMode(flags.mode);
        const r = await mountHugetlbfs(options);
        if (flags.json) printJson(io, r);
        else if (r.dryRun) printActions(io, r.actions);
        else if (r.reused) {
          io.stdout.write(
            `${r.dir}: already mounted with matching options (${r.mount!.options.join(',')})\n`,
          );
        } else {
          io.stdout.write(
            `Mounted hugetlbfs (${formatSize(r.mount!.pageSize)} pages) at ${r.dir}` +
              ` (${r.mount!.options.join(',')})\n`,
          );
        }
      }),
    );
}

export function registerUmount(program: Command, ctx: HugepagesContext): void {
  program
    .command('umount')
    .description('unmount the hugetlbfs at DIR; refuses while files on it are in use')
    .argument('<DIR>', 'mount point')
    .option('--force', 'unmount anyway, lazily: users keep their pages until they exit')
    .option('--dry-run', 'print the umount command instead of running it')
    .option('--json', 'print the result as JSON')
    .action(
      async (dirArg: string, flags: { force?: boolean; dryRun?: boolean; json?: boolean }) => {
        const r = await umountHugetlbfs({
          host: ctx.host,
          dir: resolve(ctx.io.cwd, dirArg),
          force: flags.force ?? false,
          dryRun: flags.dryRun ?? false,
        });
        if (flags.json) printJson(ctx.io, r);
        else if (r.dryRun) printActions(ctx.io, r.actions);
        else if (r.lazy) {
          const who = r.users.map((u) => `${u.command} (pid ${u.pid})`).join(', ');
          ctx.io.stdout.write(`Detached ${r.dir} lazily; still in use by ${who}\n`);
        } else ctx.io.stdout.write(`Unmounted ${r.dir}\n`);
      },
    );
}
