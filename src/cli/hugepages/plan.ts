// vmforge hugepages plan --memory SIZE [--pagesize 2M] [--mount DIR | --backend memfd|file]
//   [--numa HOSTNODE=SIZE,…] [--share on|off] [--id ID] [--no-prealloc] [--no-check] [--json]:
// check the pool and print the QEMU arguments that back guest RAM with huge pages.

import { resolve } from 'node:path';
import type { Command } from 'commander';
import { InvalidArgumentError } from '../../core/index.js';
import { planHugepageBackend, shellQuote, type PlanOptions } from '../../hugetlbfs/index.js';
import { collect } from '../program.js';
import { printJson } from './format.js';
import type { HugepagesContext } from './index.js';
import { optMemory, optNuma, optOnOff, optPageSize, shortIsTwo } from './options.js';

interface PlanFlags {
  memory: string;
  pagesize?: string;
  mount?: string;
  backend?: string;
  numa?: string[];
  share?: string;
  id?: string;
  prealloc: boolean;
  check: boolean;
  json?: boolean;
}

export function registerPlan(program: Command, ctx: HugepagesContext): void {
  program
    .command('plan')
    .description('check free huge pages and print QEMU memory-backend arguments')
    .requiredOption('--memory <SIZE>', 'guest RAM (bare numbers are MiB, as qemu -m)')
    .option('--pagesize <SIZE>', "page size (2M, 1G); default: the mount's, else the default size")
    .option('--mount <DIR>', 'hugetlbfs mount for memory-backend-file (default: memfd, no mount)')
    .option('--backend <TYPE>', 'file or memfd (file without --mount picks an existing mount)')
    .option('--numa <NODE=SIZE,...>', 'guest NUMA nodes bound to host nodes, in order', collect)
    .option('--share <on|off>', 'share= of the backend (default: off for file, on for memfd)')
    .option('--id <ID>', 'backend id (default ram0; with --numa the prefix of ram-node<N>)')
    .option('--no-prealloc', 'do not preallocate (prealloc=off): a short pool fails at fault time')
    .option('--no-check', 'print the arguments even when too few pages are free')
    .option('--json', 'print the plan as JSON (args, objects, checks)')
    .action((flags: PlanFlags) =>
      shortIsTwo(async () => {
        const options: PlanOptions = {
          host: ctx.host,
          memory: optMemory(flags.memory, 'memory size'),
          prealloc: flags.prealloc,
          check: flags.check,
        };
        const pageSize = optPageSize(flags.pagesize);
        if (pageSize !== undefined) options.pageSize = pageSize;
        if (flags.mount !== undefined) options.mount = resolve(ctx.io.cwd, flags.mount);
        if (flags.backend !== undefined) {
          if (flags.backend !== 'file' && flags.backend !== 'memfd') {
            throw new InvalidArgumentError(
              `Invalid backend '${flags.backend}': expected file or memfd`,
            );
          }
          options.backend = flags.backend;
        }
        if (flags.numa !== undefined) options.numa = optNuma(flags.numa);
        if (flags.share !== undefined) options.share = optOnOff(flags.share, 'share');
        if (flags.id !== undefined) {
          if (!/^[A-Za-z][\w.-]*$/.test(flags.id)) {
            throw new InvalidArgumentError(
              `Invalid id '${flags.id}': QEMU ids start with a letter`,
            );
          }
          options.id = flags.id;
        }
        const plan = await planHugepageBackend(options);
        if (flags.json) printJson(ctx.io, plan);
        else ctx.io.stdout.write(`${plan.args.map(shellQuote).join(' ')}\n`);
      }),
    );
}
