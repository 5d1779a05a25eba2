// qemu-img rebase [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] -b backing_file
//   [-F backing_fmt] filename
import type { Command } from 'commander';
import { rebaseImage } from '../../img/rebase.js';
import { usageError } from '../io.js';
import { formatOption, oneFilename, rejectUnsupported, type ToolContext } from './common.js';
import { progressMode, progressReporter } from './progress.js';
import { hostCache } from './cache.js';

export function registerRebase(program: Command, ctx: ToolContext): void {
  program
    .command('rebase')
    .description('change the backing file of an image')
    .argument('[filename...]')
    .option('-f <fmt>', 'image format (probed when absent)')
    .option('-b <backing_file>', "new backing file ('' for none)")
    .option('-F <backing_fmt>', 'format of the new backing file')
    .option('-u', 'unsafe: only change the recorded name')
    .option('-t <cache>', 'cache mode')
    .option('-T <src_cache>', 'source cache mode')
    .option('-p', 'show progress')
    .option('--progress <fmt>', 'progress as human text/bar or json lines (vmforge extension)')
    .option('-q', 'quiet')
    .option('-U, --force-share', 'open without locking (vmforge never locks images)')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported')
    .action(async (args: string[], opts: Record<string, string | boolean | undefined>) => {
      rejectUnsupported(opts);
      const unsafe = Boolean(opts['u']);
      const filename = oneFilename(args);
      if (!unsafe && opts['b'] === undefined) {
        throw usageError('Must specify backing file (-b) or use unsafe mode (-u)');
      }
      const quiet = Boolean(opts['q']);
      const mode = progressMode(
        ctx.io,
        Boolean(opts['p']),
        opts['progress'] as string | undefined,
        quiet,
      );
      const progress = mode ? progressReporter(ctx.io, mode, 'rebasing ') : undefined;
      const cache = hostCache(opts['t'] as string | undefined, ctx);
      hostCache(opts['T'] as string | undefined, ctx, 'source ');
      try {
        await rebaseImage(filename, {
          format: formatOption(opts['f'] as string | undefined),
          backingFile: (opts['b'] as string | undefined) ?? '',
          backingFormat: opts['F'] as string | undefined,
          unsafe,
          ...(cache ? { cache } : {}),
          ...(progress ? { onProgress: progress.update } : {}),
        });
      } finally {
        progress?.end();
      }
    });
}
