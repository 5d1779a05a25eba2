// `vmforge hugepages status|reserve|mount|umount|plan`: thin commands over src/hugetlbfs.
// Exit codes: 0 success, 1 error, 2 not enough huge pages (reserve granted fewer than asked, plan
// or mount min_size found too few free pages).

import { Command } from 'commander';
import { localHost, type HugetlbHost } from '../../hugetlbfs/index.js';
import { processIO, type CliIO } from '../io.js';
import { qemuStyle, runProgram, type ToolContext } from '../program.js';
import { registerStatus } from './status.js';
import { registerReserve } from './reserve.js';
import { registerMount, registerUmount } from './mount.js';
import { registerPlan } from './plan.js';

/** What every hugepages command gets: output, the host to act on, the caller's cwd. */
export interface HugepagesContext extends ToolContext {
  readonly host: HugetlbHost;
}

/** `vmforge hugepages ARGS`; `host` lets tests point the commands at a fixture tree. */
export async function runHugepages(
  rawArgv: string[],
  io: CliIO = processIO(),
  host: HugetlbHost = localHost(),
): Promise<number> {
  const debug = rawArgv.includes('--debug') || io.env['VMFORGE_DEBUG'] === '1';
  const argv = rawArgv.filter((a) => a !== '--debug');
  const ctx: HugepagesContext = { io, tool: 'vmforge hugepages', debug, host };
  const program = qemuStyle(new Command('vmforge hugepages'), ctx);
  program.description('Huge page pools, hugetlbfs mounts and QEMU memory backends');
  for (const register of [
    registerStatus,
    registerReserve,
    registerMount,
    registerUmount,
    registerPlan,
  ]) {
    register(program, ctx);
  }
  if (argv.length === 0) {
    io.stderr.write(program.helpInformation());
    return 1;
  }
  const known = new Set(program.commands.map((c) => c.name()));
  const first = argv[0]!;
  if (!first.startsWith('-') && !known.has(first)) {
    io.stderr.write(
      `vmforge hugepages: unknown command '${first}'\nTry 'vmforge hugepages --help' for more information\n`,
    );
    return 1;
  }
  return runProgram(program, argv, ctx);
}
