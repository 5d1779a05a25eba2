// qemu-img amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force]
//   -o options filename
import type { Command } from 'commander';
import { openImage } from '../../image/open.js';
import { amendImage, amendOptionHelp, type AmendRequest } from '../../img/amend.js';
import { hasHelpOption } from '../../img/qemu-opts.js';
import { CliExit, usageError } from '../io.js';
import { accumulateCommas } from '../program.js';
import { formatOption, rejectUnsupported, type ToolContext } from './common.js';
import { QemuProgress } from './qemu-progress.js';

/** bdrv_parse_cache_mode(): the names -t accepts, mapped onto vmforge's file cache modes. */
function cacheMode(text: string): AmendRequest['cache'] {
  switch (text) {
    case 'writeback':
    case 'none':
    case 'off':
      return 'writeback';
    case 'writethrough':
    case 'directsync':
      return 'writethrough';
    case 'unsafe':
      return 'unsafe';
    default:
      throw new CliExit(1, `Invalid cache option: ${text}`);
  }
}

export function registerAmend(program: Command, ctx: ToolContext): void {
  program
    .command('amend')
    .description("change an existing image's format options")
    .argument('[filename...]')
    .option('-o <options>', 'options to change (-o help lists them)', accumulateCommas)
    .option('-f <fmt>', 'image format (probed when absent)')
    .option('-t <cache>', 'cache mode (default writeback)')
    .option('-p', 'show progress')
    .option('-q', 'quiet')
    .option('--force', 'allow unsafe LUKS key slot changes (vmforge does not change LUKS slots)')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported')
    .action(async (args: string[], opts: Record<string, string | boolean | undefined>) => {
      rejectUnsupported(opts);
      const options = opts['o'] as string | undefined;
      if (options === undefined) throw usageError('Must specify options (-o)');
      const quiet = Boolean(opts['q']);
      const progress = new QemuProgress(opts['p'] && !quiet ? ctx.io : undefined);
      const fmt = opts['f'] as string | undefined;
      try {
        if (fmt !== undefined && hasHelpOption(options)) {
          ctx.io.stdout.write(amendOptionHelp(fmt));
          return;
        }
        if (args.length !== 1) throw new CliExit(1, 'Expecting one image file name');
        const filename = args[0]!;
        const cache = cacheMode((opts['t'] as string | undefined) ?? 'writeback');
        const onWarning = (m: string) => ctx.io.stderr.write(`${m}\n`);
        if (hasHelpOption(options)) {
          // The format was probed: open the image (as qemu-img does) to learn it.
          const dev = await openImage(filename, { readOnly: false, onWarning });
          const format = dev.format;
          await dev.close();
          ctx.io.stdout.write(amendOptionHelp(format));
          return;
        }
        let started = false;
        try {
          await amendImage({
            filename,
            options,
            format: formatOption(fmt),
            force: Boolean(opts['force']),
            ...(cache ? { cache } : {}),
            onWarning,
            onStart: () => {
              started = true;
              progress.print(0, 0);
            },
            onProgress: (offset, total) => progress.status(offset, total),
          });
        } finally {
          if (started) progress.print(100, 0);
        }
      } finally {
        progress.end();
      }
    });
}
