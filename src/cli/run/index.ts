// `vmforge run`, `vmforge qmp` and `vmforge demo`: thin commands over src/qemu, registered as umbrella
// subprograms (src/cli/subprograms.ts imports this file for its side effect).

import { Command } from 'commander';
import { processIO, type CliIO } from '../io.js';
import { qemuStyle, runProgram, type ToolContext } from '../program.js';
import { registerDemo } from './demo.js';
import { registerQmp } from './qmp.js';
import { registerRun, type RunHooks } from './run.js';

function context(rawArgv: string[], io: CliIO, tool: string): { argv: string[]; ctx: ToolContext } {
  const debug = rawArgv.includes('--debug') || io.env['VMFORGE_DEBUG'] === '1';
  return { argv: rawArgv.filter((a) => a !== '--debug'), ctx: { io, tool, debug } };
}

/** `vmforge run ARGS`; `hooks` let tests inject providers and run directories. */
export async function runRun(
  rawArgv: string[],
  io: CliIO = processIO(),
  hooks: RunHooks = {},
): Promise<number> {
  const { argv, ctx } = context(rawArgv, io, 'vmforge run');
  const program = qemuStyle(new Command('vmforge'), ctx);
  registerRun(program, io, hooks);
  return runProgram(program, ['run', ...argv], ctx);
}

/** `vmforge qmp SOCKET COMMAND [JSON-ARGS]`. */
export async function runQmp(rawArgv: string[], io: CliIO = processIO()): Promise<number> {
  const { argv, ctx } = context(rawArgv, io, 'vmforge qmp');
  const program = qemuStyle(new Command('vmforge'), ctx);
  registerQmp(program, io);
  return runProgram(program, ['qmp', ...argv], ctx);
}

/** `vmforge demo [--arch A] [--timeout S] [--keep DIR]`. */
export async function runDemoCli(rawArgv: string[], io: CliIO = processIO()): Promise<number> {
  const { argv, ctx } = context(rawArgv, io, 'vmforge demo');
  const program = qemuStyle(new Command('vmforge'), ctx);
  registerDemo(program, io);
  return runProgram(program, ['demo', ...argv], ctx);
}
