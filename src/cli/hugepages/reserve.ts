// vmforge hugepages reserve (--count N | --memory SIZE) [--pagesize 2M|1G] [--node N]
//   [--dry-run] [--json]: set a pool, read back what the kernel granted, exit 2 when short.
// Like hugeadm --pool-pages-min, a leading + or - changes the pool instead of setting it.

import type { Command } from 'commander';
import { formatSize, InvalidArgumentError } from '../../core/index.js';
import { reserveHugepages, type ReserveResult } from '../../hugetlbfs/index.js';
import { CliExit } from '../io.js';
import { printActions, printJson } from './format.js';
import type { HugepagesContext } from './index.js';
import { optInteger, optMemory, optPageSize } from './options.js';

interface ReserveFlags {
  count?: string;
  memory?: string;
  pagesize?: string;
  node?: string;
  dryRun?: boolean;
  json?: boolean;
}

/** "+8" -> add 8; "-8" -> remove 8; "8" -> set 8. */
function splitSign(text: string): { adjust: 'set' | 'add' | 'remove'; rest: string } {
  if (text.startsWith('+')) return { adjust: 'add', rest: text.slice(1) };
  if (text.startsWith('-')) return { adjust: 'remove', rest: text.slice(1) };
  return { adjust: 'set', rest: text };
}

export function describeReserve(r: ReserveResult): string {
  const where = r.node === undefined ? '' : ` on node ${r.node}`;
  const unit = formatSize(r.pageSize);
  if (r.granted === undefined)
    return `${unit} pool${where}: would set ${r.previous} -> ${r.requested} pages`;
  let line = `${unit} pool${where}: ${r.previous} -> ${r.granted} pages`;
  line += r.granted === r.requested ? '' : ` (asked for ${r.requested})`;
  line += ` (${formatSize(r.granted * r.pageSize)})`;
  if (r.surplus > 0) line += `, ${r.surplus} surplus pages in use`;
  return `${line}\n`;
}

export function registerReserve(program: Command, ctx: HugepagesContext): void {
  program
    .command('reserve')
    .description('set a huge page pool (globally or on one NUMA node) and verify what was granted')
    .option('--count <N>', 'pool size in pages (+N / -N: grow or shrink by N)')
    .option('--memory <SIZE>', 'pool size as memory, rounded up to whole pages (+SIZE / -SIZE)')
    .option('--pagesize <SIZE>', 'page size (2M, 1G); default: the default huge page size')
    .option('--node <N>', 'set the pool of this NUMA node only')
    .option('--dry-run', 'print the sysfs write instead of doing it')
    .option('--json', 'print the result as JSON')
    .action(async (flags: ReserveFlags) => {
      if ((flags.count === undefined) === (flags.memory === undefined)) {
        throw new CliExit(1, 'reserve needs exactly one of --count or --memory', true);
      }
      const spec = splitSign(flags.count ?? flags.memory!);
      const amount =
        flags.count !== undefined
          ? { count: optInteger(spec.rest, 'count') }
          : { memory: optMemory(spec.rest, 'memory size') };
      if (spec.rest === '') throw new InvalidArgumentError('Missing amount after the sign');
      const pageSize = optPageSize(flags.pagesize);
      const result = await reserveHugepages({
        host: ctx.host,
        ...amount,
        adjust: spec.adjust,
        ...(pageSize === undefined ? {} : { pageSize }),
        ...(flags.node === undefined ? {} : { node: optInteger(flags.node, 'NUMA node') }),
        dryRun: flags.dryRun ?? false,
      });
      if (flags.json) printJson(ctx.io, result);
      else if (result.dryRun) printActions(ctx.io, result.actions);
      else ctx.io.stdout.write(describeReserve(result));
      if (!result.ok) throw new CliExit(2, result.message ?? 'The pool was not set as asked');
    });
}
