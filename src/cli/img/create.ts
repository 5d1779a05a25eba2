// qemu-img create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
import type { Command } from 'commander';
import { isVmforgeError } from '../../core/index.js';
import { createFromRequest, createOptionLists } from '../../img/create.js';
import { hasHelpOption, optionHelp } from '../../img/qemu-opts.js';
import { CliExit, usageError } from '../io.js';
import { accumulateCommas } from '../program.js';
import { cvtnum, rejectUnsupported, type ToolContext } from './common.js';

export function registerCreate(program: Command, ctx: ToolContext): void {
  program
    .command('create')
    .description('create a new disk image')
    .argument('[args...]', 'filename [size]')
    .option('-f <fmt>', 'image format (raw or qcow2)', 'raw')
    .option('-b <backing_file>', 'backing file')
    .option('-F <backing_fmt>', 'backing file format')
    .option('-u', 'do not open the backing file (size must be given)')
    .option('-o <options>', 'format options (-o help lists them)', accumulateCommas)
    .option('-q', 'quiet')
    .option('--object <objectdef>', 'not supported')
    .action(async (args: string[], opts: Record<string, string | boolean | undefined>) => {
      rejectUnsupported(opts);
      const fmt = opts['f'] as string;
      const options = opts['o'] as string | undefined;
      if (options !== undefined && hasHelpOption(options)) {
        const lists = createOptionLists(fmt);
        if (!lists) throw new CliExit(1, `Unknown file format '${fmt}'`);
        ctx.io.stdout.write(
          `${optionHelp(`Supported ${fmt}`, lists.format)}\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n`,
        );
        return;
      }
      const [filename, sizeText, extra] = args;
      if (filename === undefined) throw usageError('Expecting image file name');
      const size = sizeText !== undefined ? cvtnum('image size', sizeText) : undefined;
      if (extra !== undefined) throw usageError(`Unexpected argument: ${extra}`);
      try {
        await createFromRequest({
          filename,
          format: fmt,
          options,
          backingFile: opts['b'] as string | undefined,
          backingFormat: opts['F'] as string | undefined,
          unsafe: Boolean(opts['u']),
          size,
          onFormatting: opts['q'] ? undefined : (line) => ctx.io.stdout.write(`${line}\n`),
        });
      } catch (err) {
        // error_reportf_err(local_err, "%s: ", filename)
        if (isVmforgeError(err)) err.message = `${filename}: ${err.message}`;
        throw err;
      }
    });
}
