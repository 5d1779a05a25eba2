// qemu-img map [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename
import type { Command } from 'commander';
import { openImage } from '../../image/open.js';
import { mapImage } from '../../img/map.js';
import { MapNotRepresentableError, MapPrinter } from '../output/index.js';
import { CliExit } from '../io.js';
import {
  cvtnum,
  formatOption,
  oneFilename,
  parseOutput,
  rejectUnsupported,
  writeBytes,
  type ToolContext,
} from './common.js';

export function registerMap(program: Command, ctx: ToolContext): void {
  program
    .command('map')
    .description('dump the metadata of an image')
    .argument('[filename...]')
    .option('-f <fmt>', 'image format (probed when absent)')
    .option('--output <ofmt>', 'human or json')
    .option('-s, --start-offset <offset>', 'start at this guest offset')
    .option('-l, --max-length <len>', 'map at most this many bytes')
    .option('-U, --force-share', 'open without locking (vmforge never locks images)')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported')
    .action(async (args: string[], opts: Record<string, string | boolean | undefined>) => {
      rejectUnsupported(opts);
      const output = parseOutput(opts['output'] as string | undefined);
      const start =
        opts['startOffset'] !== undefined
          ? cvtnum('start offset', opts['startOffset'] as string)
          : 0;
      const maxLength =
        opts['maxLength'] !== undefined
          ? cvtnum('max length', opts['maxLength'] as string)
          : undefined;
      const filename = oneFilename(args);
      const dev = await openImage(filename, {
        format: formatOption(opts['f'] as string | undefined),
      });
      try {
        const printer = new MapPrinter(output, start);
        writeBytes(ctx.io.stdout, printer.begin());
        try {
          for await (const e of mapImage(dev, {
            startOffset: start,
            ...(maxLength !== undefined ? { maxLength } : {}),
            output,
          })) {
            // An empty trailing entry is dumped by MapPrinter.end() when nothing else was.
            if (e.length === 0) continue;
            writeBytes(ctx.io.stdout, printer.entry(e));
          }
        } catch (err) {
          if (err instanceof MapNotRepresentableError) throw new CliExit(1, err.message);
          throw err;
        }
        writeBytes(ctx.io.stdout, printer.end());
      } finally {
        await dev.close();
      }
    });
}
