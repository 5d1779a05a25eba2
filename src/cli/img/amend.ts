// qemu-img amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force]
//   -o options filename
import type { Command } from 'commander';
import { openImage } from '../../image/open.js';
import { amendImage, amendOptionHelp } from '../../img/amend.js';
import { hasHelpOption } from '../../img/qemu-opts.js';
import { CliExit, usageError } from '../io.js';
import { accumulateCommas } from '../program.js';
import { formatOption, rejectUnsupported, type ToolContext } from './common.js';
import { hostCache } from './cache.js';
import { progressMode, progressReporter } from './progress.js';
import { QemuProgress } from './qemu-progress.js';

export function registerAmend(program: Command, ctx: ToolContext): void {
  program
    .command('amend')
    .description("change an existing image's format options")
    .argument('[filename...]')
    .option('-o <options>', 'options to change (-o help lists them)', accumulateCommas)
    .option('-f <fmt>', 'image format (probed when absent)')
    .option('-t <cache>', 'cache mode (default writeback)')
    .option('-p', 'show progress')
    .option('--progress <fmt>', 'progress as human text/bar or json lines (vmforge extension)')
    .option('-q', 'quiet')
    .option('--force', 'allow unsafe LUKS key slot changes (vmforge does not change LUKS slots)')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported')
    .action(async (args: string[], opts: Record<string, string | boolean | undefined>) => {
      rejectUnsupported(opts);
      const options = opts['o'] as string | undefined;
      if (options === undefined) throw usageError('Must specify options (-o)');
      const quiet = Boolean(opts['q']);
      const mode = progressMode(
        ctx.io,
        Boolean(opts['p']),
        opts['progress'] as string | undefined,
        quiet,
      );
      // qemu-img's own text is reproduced exactly (float arithmetic, 1% steps); a terminal gets
      // the bar and pipelines JSON lines, as for the other commands.
      const progress =
        mode === 'bar' || mode === 'json'
          ? new QemuProgress(undefined, 1.0, progressReporter(ctx.io, mode, 'amending '))
          : new QemuProgress(mode === 'qemu' ? ctx.io : undefined);
      const fmt = opts['f'] as string | undefined;
      try {
        if (fmt !== undefined && hasHelpOption(options)) {
          ctx.io.stdout.write(amendOptionHelp(fmt));
          return;
        }
        if (args.length !== 1) throw new CliExit(1, 'Expecting one image file name');
        const filename = args[0]!;
        // bdrv_parse_cache_mode() also knows "off" (= none).
        const t = opts['t'] as string | undefined;
        const cache = hostCache(t === 'off' ? 'none' : t, ctx);
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
