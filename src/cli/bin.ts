// What every bin shim does around its command: stdout/stderr errors, the exit code, and a
// safety net for a command that never finishes.

import { processIO, type CliIO } from './io.js';

/** Run `command` on process.argv, set the exit code, never call process.exit(). */
export async function runBinWith(
  command: (argv: string[], io: CliIO) => Promise<number>,
  argv: string[] = process.argv.slice(2),
): Promise<void> {
  // Its streams are made on first use, each with EPIPE handled (io.ts).
  const io = processIO();
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
  const code = await command(argv, io);
  finished = true;
  process.off('beforeExit', onBeforeExit);
  process.exitCode = code;
}
