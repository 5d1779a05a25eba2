// qemu-img compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q]
//                  [-s] [-U] filename1 filename2
// Exit status as qemu-img.c img_compare(): 0 identical, 1 different, 2 an image could not be
// opened (or a bad option value), 3 block status failed, 4 a read failed.
import type { Command } from 'commander';
import type { BlockDevice } from '../../block/device.js';
import { isVmforgeError } from '../../core/index.js';
import { openImage } from '../../image/open.js';
import { compareImages, CompareError, type CompareResult } from '../../img/compare.js';
import { CliExit, usageError } from '../io.js';
import { formatOption, type ToolContext } from './common.js';
import { reportIoError } from './io-errors.js';
import { progressMode, progressReporter } from './progress.js';
import { QemuProgress } from './qemu-progress.js';

/** bdrv_parse_cache_mode()'s accepted names. */
export const CACHE_MODES = ['none', 'off', 'directsync', 'writeback', 'unsafe', 'writethrough'];

/** An error before or while opening: exit status 2 with the error's own text. */
function openFailure(err: unknown): unknown {
  if (!isVmforgeError(err)) return err;
  return new CliExit(2, err.hint ? `${err.message}\n${err.hint}` : err.message);
}

/**
 * -p: qemu-img's own progress text (qemu_progress_init(progress, 2.0), C float steps) unless
 * stdout is a terminal (a bar, as convert shows) or --progress=json asks for JSON lines.
 */
function compareProgress(ctx: ToolContext, mode: ReturnType<typeof progressMode>): QemuProgress {
  if (mode === 'bar' || mode === 'json') {
    return new QemuProgress(undefined, 2.0, progressReporter(ctx.io, mode, 'comparing '));
  }
  return new QemuProgress(mode === 'qemu' ? ctx.io : undefined, 2.0);
}

/** The verdict line (the size warning, if any, was printed when it was due). */
function verdict(result: CompareResult): { line: string; code: number } {
  switch (result.status) {
    case 'identical':
      return { line: 'Images are identical.', code: 0 };
    case 'content-mismatch':
      return { line: `Content mismatch at offset ${result.offset}!`, code: 1 };
    case 'size-mismatch':
      return { line: 'Strict mode: Image size mismatch!', code: 1 };
    case 'block-status-mismatch':
      return { line: `Strict mode: Offset ${result.offset} block status mismatch!`, code: 1 };
  }
}

export function registerCompare(program: Command, ctx: ToolContext): void {
  program
    .command('compare')
    .description('check whether two images have the same content')
    .argument('[filenames...]', 'filename1 filename2')
    .option('-f <fmt>', 'first image format (probed when absent)')
    .option('-F <fmt>', 'second image format (probed when absent)')
    .option('-T <src_cache>', 'source cache mode (accepted; vmforge reads through the page cache)')
    .option('-p', 'show progress')
    .option('--progress <fmt>', 'progress as human text/bar or json lines (vmforge extension)')
    .option('-q', 'quiet: print nothing but errors')
    .option('-s', 'strict: sizes and allocation status must match too')
    .option('-U, --force-share', 'open without locking (vmforge never locks images)')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported')
    .action(async (args: string[], opts: Record<string, string | boolean | undefined>) => {
      if (opts['object'] !== undefined) {
        throw new CliExit(
          2,
          '--object is not supported by vmforge (no secrets or other QEMU objects)',
        );
      }
      const quiet = Boolean(opts['q']);
      if (args.length !== 2) throw usageError('Expecting two image file names');
      const [filename1, filename2] = args as [string, string];
      const progress = compareProgress(
        ctx,
        progressMode(ctx.io, Boolean(opts['p']), opts['progress'] as string | undefined, quiet),
      );
      const say = (line: string): void => {
        if (!quiet) ctx.io.stdout.write(`${line}\n`);
      };
      let dev1: BlockDevice | undefined;
      let dev2: BlockDevice | undefined;
      try {
        const cache = (opts['T'] as string | undefined) ?? 'writeback';
        if (!CACHE_MODES.includes(cache)) {
          throw new CliExit(2, `Invalid source cache option: ${cache}`);
        }
        if (opts['imageOpts']) throw new CliExit(2, '--image-opts is not supported by vmforge');
        try {
          dev1 = await openImage(filename1, {
            format: formatOption(opts['f'] as string | undefined),
          });
          dev2 = await openImage(filename2, {
            format: formatOption(opts['F'] as string | undefined),
          });
        } catch (err) {
          throw openFailure(err);
        }
        progress.print(0, 100);
        let result: CompareResult;
        try {
          result = await compareImages(dev1, dev2, {
            strict: Boolean(opts['s']),
            onProgress: ({ bytes, total }) => progress.advance(bytes, total),
            onSizeMismatch: () => say('Warning: Image size mismatch!'),
          });
        } catch (err) {
          if (!(err instanceof CompareError)) throw err;
          if (err.stage === 'block-status') {
            // bdrv_block_status_above() failed: the driver's event, then qemu-img's line.
            reportIoError(ctx, err.cause);
            throw new CliExit(3, err.message);
          }
          throw new CliExit(4, `${err.message}: ${reportIoError(ctx, err.cause)}`);
        }
        const { line, code } = verdict(result);
        say(line);
        if (code !== 0) throw new CliExit(code);
      } finally {
        await dev2?.close().catch(() => undefined);
        await dev1?.close().catch(() => undefined);
        progress.end();
      }
    });
}
