// `vmforge firmware …`: list, find, fetch, prepare, build. Thin: parse, call src/edk2, format.

import { Command } from 'commander';
import { processIO, type CliIO } from '../io.js';
import { qemuStyle, runProgram, type ToolContext } from '../program.js';
import { registerBuild } from './build.js';
import { registerFetch } from './fetch.js';
import { registerFind } from './find.js';
import { registerList } from './list.js';
import { registerPrepare } from './prepare.js';

export async function runFirmware(rawArgv: string[], io: CliIO = processIO()): Promise<number> {
  const debug = rawArgv.includes('--debug') || io.env['VMFORGE_DEBUG'] === '1';
  const argv = rawArgv.filter((a) => a !== '--debug');
  const ctx: ToolContext = { io, tool: 'vmforge firmware', debug };
  const program = qemuStyle(new Command('vmforge firmware'), ctx);
  program.description('UEFI firmware for QEMU: find, fetch, prepare and build edk2 images');
  registerList(program, ctx);
  registerFind(program, ctx);
  registerFetch(program, ctx);
  registerPrepare(program, ctx);
  registerBuild(program, ctx);
  if (argv.length === 0) {
    io.stderr.write(`vmforge firmware: missing command\n${program.helpInformation()}`);
    return 1;
  }
  const known = new Set(program.commands.map((c) => c.name()));
  if (!argv[0]!.startsWith('-') && !known.has(argv[0]!)) {
    io.stderr.write(
      `vmforge firmware: unknown command '${argv[0]}'\nTry 'vmforge firmware --help' for more information\n`,
    );
    return 1;
  }
  return runProgram(program, argv, ctx);
}
