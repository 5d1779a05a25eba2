// Shared wiring for every vmforge (sub)program: commander configured to behave like getopt-based
// QEMU tools (messages on stderr with the tool's prefix, exit codes under our control).

import { Command, CommanderError, Option } from 'commander';
import { isVmforgeError } from '../core/index.js';
import { CliExit, type CliIO } from './io.js';

/** The tool name used as the error prefix: `vmforge-img: Could not open 'x': ...`. */
export interface ToolContext {
  readonly io: CliIO;
  readonly tool: string;
  readonly debug: boolean;
}

/**
 * Configure a commander Command the way QEMU's getopt loops behave: unknown options and missing
 * values end with "<tool>: unrecognized option '-z'" + "Try '<tool> --help'..." and exit 1.
 */
export function qemuStyle(cmd: Command, ctx: ToolContext): Command {
  cmd.exitOverride();
  cmd.allowExcessArguments(true);
  cmd.configureOutput({
    writeOut: (s) => ctx.io.stdout.write(s),
    writeErr: (s) => ctx.io.stderr.write(s),
    outputError: () => {
      /* printed by runProgram with the tool's prefix */
    },
  });
  cmd.helpOption('-h, --help', 'display this help');
  return cmd;
}

/** A repeatable option value collector (`-o a -o b` -> "a,b", as qemu-img's accumulate_options). */
export function accumulateCommas(value: string, previous: string | undefined): string {
  return previous === undefined ? value : `${previous},${value}`;
}

export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export { Command, Option };

/** Translate commander's parse errors into QEMU's wording. */
function commanderMessage(err: CommanderError): string {
  const m = err.message.replace(/^error: /, '');
  let match = /^unknown option '([^']+)'/.exec(m);
  if (match) return `unrecognized option '${match[1]}'`;
  match = /^option '([^']+)' argument missing/.exec(m);
  if (match) {
    const flag = match[1]!.split(/[ ,]+/)[0] ?? match[1]!;
    return `missing argument for option '${flag}'`;
  }
  match = /^too many arguments.*?'?([^']*)'?$/.exec(m);
  if (match) return `Unexpected argument: ${match[1]}`;
  return m;
}

/**
 * Run a commander program and turn every outcome into an exit code: 0 on success, the
 * CliExit's code, 1 for vmforge errors and usage errors. Stacks only with --debug.
 */
export async function runProgram(
  program: Command,
  argv: string[],
  ctx: ToolContext,
): Promise<number> {
  const { io, tool } = ctx;
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return 0;
      if (err.code === 'commander.help') return 0;
      io.stderr.write(
        `${tool}: ${commanderMessage(err)}\nTry '${tool} --help' for more information\n`,
      );
      return 1;
    }
    if (err instanceof CliExit) {
      if (err.message) io.stderr.write(`${tool}: ${err.message}\n`);
      if (err.usageHint) io.stderr.write(`Try '${tool} --help' for more information\n`);
      return err.exitCode;
    }
    if (isVmforgeError(err)) {
      io.stderr.write(`${tool}: ${err.message}\n`);
      if (err.hint) io.stderr.write(`${err.hint}\n`);
      if (ctx.debug && err.stack) io.stderr.write(`${err.stack}\n`);
      return 1;
    }
    // A bug: say so plainly, keep the stack behind --debug.
    const e = err instanceof Error ? err : new Error(String(err));
    io.stderr.write(`${tool}: internal error: ${e.message}\n`);
    if (ctx.debug && e.stack) io.stderr.write(`${e.stack}\n`);
    else io.stderr.write(`${tool}: (run with --debug or VMFORGE_DEBUG=1 for details)\n`);
    return 1;
  }
}
