// `vmforge-img ARGS` / `vmforge img ARGS`: the qemu-img compatible commands. Kept apart from
// main.ts (the umbrella) so that the vmforge-img bundle holds the img commands and nothing of
// the firmware, launcher or NBD server code (scripts/bundle.mjs, bin/code-cache.cjs).

import { Command } from 'commander';
import { processIO, type CliIO } from './io.js';
import { qemuStyle, runProgram, type ToolContext } from './program.js';
import { imgCommandNames, registerImgCommands, imgVersionText } from './img/index.js';
// NBD URIs (nbd://, nbd+unix://) as image names in every img command.
import './nbd/uris.js';

/** `--debug` anywhere in argv, or VMFORGE_DEBUG=1: stack traces and internal detail on errors. */
export function splitDebug(argv: string[], io: CliIO): { argv: string[]; debug: boolean } {
  const debug = argv.includes('--debug') || io.env['VMFORGE_DEBUG'] === '1';
  return { argv: argv.filter((a) => a !== '--debug'), debug };
}

/** `vmforge-img ARGS` / `vmforge img ARGS`. */
export async function runImg(rawArgv: string[], io: CliIO = processIO()): Promise<number> {
  const { argv, debug } = splitDebug(rawArgv, io);
  const ctx: ToolContext = { io, tool: 'vmforge-img', debug };
  if (argv.length === 0) {
    io.stderr.write(
      `vmforge-img: Not enough arguments\nTry 'vmforge-img --help' for more information\n`,
    );
    return 1;
  }
  if (argv[0] === '-V' || argv[0] === '--version') {
    io.stdout.write(imgVersionText());
    return 0;
  }
  const program = qemuStyle(new Command('vmforge-img'), ctx);
  program.description('QEMU disk image utility, in TypeScript (qemu-img 7.2 compatible)');
  const first = argv[0]!;
  if (!first.startsWith('-') && !imgCommandNames.includes(first)) {
    io.stderr.write(
      `vmforge-img: Command not found: ${first}\nTry 'vmforge-img --help' for more information\n`,
    );
    return 1;
  }
  // A command run loads only that command; options first (--help, ...) need them all.
  await registerImgCommands(program, ctx, first.startsWith('-') ? undefined : first);
  return runProgram(program, argv, ctx);
}
