// `vmforge demo`: the pipeline end to end — build a UEFI-bootable image with vmforge, export it
// with vmforge's NBD server, boot QEMU from the export, show the marker the guest printed.
// Missing tools are named with the packages to install.

import { rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { DEMO_MARKER, runDemo } from '../../qemu/demo.js';
import { hostArch } from '../../qemu/spec/machine.js';
import { usageError, type CliIO } from '../io.js';
import type { Command } from '../program.js';

export function registerDemo(program: Command, io: CliIO): void {
  program
    .command('demo')
    .description(
      'build a UEFI-bootable disk, export it over NBD, boot QEMU from it, show the marker',
    )
    .option('--arch <arch>', 'aarch64 or x86_64 (default: the host architecture)')
    .option('--timeout <seconds>', 'give up after SECONDS', '180')
    .option('--keep <dir>', 'build in DIR and keep the image and serial log there')
    .action(async (opts: { arch?: string; timeout: string; keep?: string }) => {
      const arch = opts.arch ?? hostArch() ?? 'x86_64';
      if (arch !== 'aarch64' && arch !== 'x86_64')
        throw usageError(`--arch must be aarch64 or x86_64, got '${arch}'`);
      const timeoutMs = Number(opts.timeout) * 1000;
      if (!(timeoutMs > 0))
        throw usageError(`--timeout expects a positive number of seconds, got '${opts.timeout}'`);
      const say = (msg: string): void => void io.stdout.write(`vmforge demo: ${msg}\n`);
      const result = await runDemo({
        arch,
        timeoutMs,
        ...(opts.keep ? { workDir: resolve(io.cwd, opts.keep) } : {}),
        onStep: say,
      });
      say(
        `the guest printed ${JSON.stringify(DEMO_MARKER)} after ${result.bootSeconds.toFixed(1)} s:`,
      );
      io.stdout.write(`  ${result.markerLine}\n`);
      if (opts.keep) say(`image ${result.image}, serial log ${result.serialLog}`);
      else await rm(result.workDir, { recursive: true, force: true });
    });
}
