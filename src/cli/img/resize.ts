// qemu-img resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q]
//   [--shrink] filename [+ | -]size
// As in qemu-img, the size is the last argument and is taken out before options are parsed,
// so "-1G" is a size; the remaining arguments go through getopt (see getopt.ts).
import type { Command } from 'commander';
import { isVmforgeError } from '../../core/index.js';
import { parsePreallocation, resizeImage } from '../../img/resize.js';
import { CliExit, usageError } from '../io.js';
import { formatOption, rejectUnsupported, type ToolContext } from './common.js';
import { getoptLong } from './getopt.js';

export function registerResize(program: Command, ctx: ToolContext): void {
  program
    .command('resize')
    .description('change the virtual size of a disk image')
    .usage(
      '[-f fmt] [--preallocation=off|metadata|falloc|full] [-q] [--shrink] filename [+ | -]size',
    )
    .argument('[args...]', 'filename and size, options (parsed like qemu-img)')
    .allowUnknownOption()
    .action(async (_args: string[], _opts: unknown, cmd: Command) => {
      // Every token after "resize" in order: no options are declared, so commander leaves them
      // all in cmd.args (it would otherwise take "-1G" for an option).
      const tokens = [...cmd.args];
      if (tokens.length < 2) throw usageError('Not enough arguments');
      const size = tokens.pop()!;
      const { options, operands } = getoptLong(tokens, {
        short: { f: true, q: false, h: false },
        long: {
          help: false,
          object: true,
          'image-opts': false,
          preallocation: true,
          shrink: false,
        },
      });
      let format: string | undefined;
      let quiet = false;
      let shrink = false;
      let preallocation: ReturnType<typeof parsePreallocation>;
      const unsupported: Record<string, unknown> = {};
      for (const o of options) {
        switch (o.name) {
          case 'h':
          case 'help':
            ctx.io.stdout.write(
              program.commands.find((c) => c.name() === 'resize')!.helpInformation(),
            );
            return;
          case 'f':
            format = o.value;
            break;
          case 'q':
            quiet = true;
            break;
          case 'shrink':
            shrink = true;
            break;
          case 'preallocation':
            preallocation = parsePreallocation(o.value!);
            if (!preallocation) throw new CliExit(1, `Invalid preallocation mode '${o.value!}'`);
            break;
          case 'object':
            unsupported['object'] = o.value;
            break;
          case 'image-opts':
            unsupported['imageOpts'] = true;
            break;
        }
      }
      rejectUnsupported(unsupported);
      if (operands.length !== 1) throw usageError('Expecting image file name and size');
      try {
        await resizeImage({
          filename: operands[0]!,
          size,
          format: formatOption(format),
          shrink,
          preallocation,
          onWarning: (m) => ctx.io.stderr.write(`${m}\n`),
        });
      } catch (err) {
        // error_report() then warn_report(): the message, then "<tool>: warning: ..." lines.
        const warnings = isVmforgeError(err) ? err.details['warnings'] : undefined;
        if (isVmforgeError(err) && Array.isArray(warnings)) {
          ctx.io.stderr.write(`${ctx.tool}: ${err.message}\n`);
          for (const w of warnings) ctx.io.stderr.write(`${ctx.tool}: warning: ${String(w)}\n`);
          throw new CliExit(1);
        }
        throw err;
      }
      if (!quiet) ctx.io.stdout.write('Image resized.\n');
    });
}
