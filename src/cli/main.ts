// Entry points for the three binaries. `vmforge` is the umbrella (img, nbd, firmware, hugepages,
// run, qmp); `vmforge-img` and `vmforge-nbd` are drop-ins for qemu-img and qemu-nbd.

import { Command } from 'commander';
import { processIO, type CliIO } from './io.js';
import { qemuStyle, runProgram, type ToolContext } from './program.js';
import { imgCommandNames, registerImgCommands, imgVersionText } from './img/index.js';
import { subprograms, type LazySubprogram } from './subprograms.js';

/** Subprograms of the umbrella `vmforge` command, loaded on first use. */
const allSubprograms: Record<string, LazySubprogram> = {
  img: {
    describe: 'qemu-img compatible image commands (also: vmforge-img)',
    load: async () => (a, io) => runImg(a, io),
  },
  ...subprograms,
};

function splitDebug(argv: string[], io: CliIO): { argv: string[]; debug: boolean } {
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

/** `vmforge ARGS`: dispatch to a subprogram. */
export async function runVmforge(rawArgv: string[], io: CliIO = processIO()): Promise<number> {
  const name = rawArgv[0];
  const sub = name === undefined ? undefined : allSubprograms[name];
  if (sub) return (await sub.load())(rawArgv.slice(1), io);
  if (name === '--version' || name === '-V') {
    io.stdout.write(`vmforge ${await packageVersion()}\n`);
    return 0;
  }
  const lines = Object.entries(allSubprograms).map(([n, s]) => `  ${n.padEnd(12)}${s.describe}`);
  const usage = `Usage: vmforge COMMAND [options]\n\nCommands:\n${lines.join('\n')}\n`;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    io.stdout.write(usage);
    return name === undefined ? 1 : 0;
  }
  io.stderr.write(`vmforge: unknown command '${name}'\n${usage}`);
  return 1;
}

export async function packageVersion(): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const { packageFile } = await import('./package-root.js');
  const pkg = JSON.parse(await readFile(packageFile('package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** Used by the bin shims: run, set the exit code, never call process.exit(). */
export async function runBin(which: 'vmforge' | 'img' | 'nbd'): Promise<void> {
  const argv = process.argv.slice(2);
  const io = processIO();
  // Like qemu-img (SIGPIPE ignored): a closed pipe on stdout/stderr is not a crash.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
  }
  // Safety net: if the event loop ever drains while a command is still pending (a promise
  // nobody will settle), say so and fail instead of exiting 0 with half the work done.
  let finished = false;
  const onBeforeExit = () => {
    if (finished) return;
    finished = true;
    io.stderr.write(`vmforge: internal error: exited before the command finished\n`);
    process.exitCode = 70;
  };
  process.on('beforeExit', onBeforeExit);
  let code: number;
  if (which === 'vmforge') code = await runVmforge(argv, io);
  else if (which === 'img') code = await runImg(argv, io);
  else code = await runVmforge(['nbd', ...argv], io);
  finished = true;
  process.off('beforeExit', onBeforeExit);
  process.exitCode = code;
}
