// qemu-img commit [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename
import type { Command } from 'commander';
import { commitImage } from '../../img/commit.js';
import {
  cvtnum,
  formatOption,
  oneFilename,
  rejectUnsupported,
  type ToolContext,
} from './common.js';
import { progressMode, progressReporter } from './progress.js';
import { hostCache } from './cache.js';

export function registerCommit(program: Command, ctx: ToolContext): void {
  program
    .command('commit')
    .description('commit an overlay into its backing file')
    .argument('[filename...]')
    .option('-f <fmt>', 'image format (probed when absent)')
    .option('-t <cache>', 'cache mode')
    .option('-b <base>', 'commit into this image of the chain (implies -d)')
    .option('-d', 'do not empty the overlay afterwards')
    .option('-p', 'show progress')
    .option('--progress <fmt>', 'progress as human text/bar or json lines (vmforge extension)')
    .option('-q', 'quiet')
    .option('-r <rate_limit>', 'rate limit in bytes per second')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported')
    .action(async (args: string[], opts: Record<string, string | boolean | undefined>) => {
      rejectUnsupported(opts);
      const rateLimit =
        opts['r'] !== undefined ? cvtnum('rate limit', opts['r'] as string) : undefined;
      const filename = oneFilename(args);
      const quiet = Boolean(opts['q']);
      const mode = progressMode(
        ctx.io,
        Boolean(opts['p']),
        opts['progress'] as string | undefined,
        quiet,
      );
      const progress = mode ? progressReporter(ctx.io, mode, 'committing ') : undefined;
      const cache = hostCache(opts['t'] as string | undefined, ctx);
      try {
        await commitImage(filename, {
          format: formatOption(opts['f'] as string | undefined),
          base: opts['b'] as string | undefined,
          drop: Boolean(opts['d']),
          rateLimit,
          ...(cache ? { cache } : {}),
          ...(progress ? { onProgress: progress.update } : {}),
        });
      } finally {
        progress?.end();
      }
      if (!quiet) ctx.io.stdout.write('Image committed.\n');
    });
}
