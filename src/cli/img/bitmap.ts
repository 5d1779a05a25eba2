// qemu-img bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)...
//   [-b source_file [-F source_fmt]] [-g granularity] [--object objectdef]
//   [--image-opts | -f fmt] filename bitmap
// Actions run in command-line order, so the options are collected as commander parses them.
import type { Command } from 'commander';
import { bitmapImage, validateBitmapOptions, type BitmapAction } from '../../img/bitmap.js';
import { CliExit } from '../io.js';
import { cvtnum, formatOption, rejectUnsupported, type ToolContext } from './common.js';

export function registerBitmap(program: Command, ctx: ToolContext): void {
  const actions: BitmapAction[] = [];
  const cmd = program
    .command('bitmap')
    .description('perform modifications of the persistent bitmap in a disk image')
    .argument('[args...]', 'filename bitmap')
    .option('--add', 'create the bitmap (enabled; see -g)')
    .option('--remove', 'remove the bitmap')
    .option('--clear', 'clear every bit of the bitmap')
    .option('--enable', 'start recording writes')
    .option('--disable', 'stop recording writes')
    .option('--merge <source>', 'merge the contents of bitmap SOURCE (see -b) into the bitmap')
    .option('-g, --granularity <granularity>', 'granularity for --add', (v: string) =>
      // Parsed as getopt meets it: a bad value fails before anything else is checked.
      cvtnum('granularity', v),
    )
    .option('-b, --source-file <source_file>', 'image holding the --merge source bitmap')
    .option('-F, --source-format <source_fmt>', 'format of the -b image')
    .option('-f <fmt>', 'image format (probed when absent)')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported');
  for (const op of ['add', 'remove', 'clear', 'enable', 'disable'] as const) {
    cmd.on(`option:${op}`, () => actions.push({ op }));
  }
  cmd.on('option:merge', (source: string) => actions.push({ op: 'merge', source }));
  cmd.action(
    async (args: string[], opts: Record<string, string | number | boolean | undefined>) => {
      rejectUnsupported(opts);
      const common = {
        actions,
        granularity: opts['granularity'] as number | undefined,
        sourceFile: opts['sourceFile'] as string | undefined,
        sourceFormat: formatOption(opts['sourceFormat'] as string | undefined),
      };
      // Checked before the positional arguments, as img_bitmap() does.
      try {
        validateBitmapOptions({ ...common, filename: '', bitmap: '' });
      } catch (err) {
        throw new CliExit(1, (err as Error).message);
      }
      if (args.length !== 2) throw new CliExit(1, 'Expecting filename and bitmap name');
      await bitmapImage({
        ...common,
        filename: args[0]!,
        bitmap: args[1]!,
        format: formatOption(opts['f'] as string | undefined),
        onWarning: (m) => ctx.io.stderr.write(`${m}\n`),
        // qemu-img reports bitmaps lost while closing and keeps the actions' exit status.
        onCloseError: (m) => ctx.io.stderr.write(`${ctx.tool}: ${m}\n`),
      });
    },
  );
}
