// qemu-img convert [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache]
//   [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-l snapshot_param]
//   [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage]
//   [--target-is-zero] filename [filename2 [...]] output_filename
import type { Command } from 'commander';
import { convertImages, type CacheMode } from '../../img/convert/index.js';
import { createOptionLists } from '../../img/create.js';
import { hasHelpOption, optionHelp } from '../../img/qemu-opts.js';
import { CliExit } from '../io.js';
import { accumulateCommas } from '../program.js';
import { cvtnum, formatOption, rejectUnsupported, type ToolContext } from './common.js';
import { progressMode, progressReporter } from './progress.js';

const CACHE_MODES = ['none', 'writeback', 'writethrough', 'directsync', 'unsafe'];

function cacheMode(value: string | undefined, what: string): CacheMode | undefined {
  if (value === undefined) return undefined;
  if (!CACHE_MODES.includes(value)) throw new CliExit(1, `Invalid ${what}cache option: ${value}`);
  return value as CacheMode;
}

/** -l: "snapshot.id=ID,snapshot.name=NAME" or an id or name. */
function snapshotParam(
  text: string | undefined,
): string | { id?: string; name?: string } | undefined {
  if (text === undefined || !text.startsWith('snapshot.')) return text;
  const out: { id?: string; name?: string } = {};
  for (const part of text.split(',')) {
    const [k, v] = part.split('=');
    if (k === 'snapshot.id' && v !== undefined) out.id = v;
    else if (k === 'snapshot.name' && v !== undefined) out.name = v;
    else throw new CliExit(1, `Failed in parsing snapshot param '${text}'`);
  }
  return out;
}

export function registerConvert(program: Command, ctx: ToolContext): void {
  program
    .command('convert')
    .description('convert an image to another format (or copy it)')
    .argument('[filenames...]', 'source images, then the output image')
    .option('-f <fmt>', 'source format (probed when absent)')
    .option('-O <output_fmt>', 'output format', undefined)
    .option('-B <backing_file>', 'backing file of the output')
    .option('-F <backing_fmt>', 'format of the output backing file')
    .option('-o <options>', 'output format options (-o help lists them)', accumulateCommas)
    .option('-c', 'compress the output (qcow2)')
    .option('-n', 'write into an existing output image')
    .option('--target-is-zero', 'the existing output image reads as zeros (with -n)')
    .option('-S <sparse_size>', 'zero runs of at least this size become holes (0 = fully allocate)')
    .option('-m <num_coroutines>', 'parallel requests (1..16, default 8)')
    .option('-W', 'allow out-of-order writes')
    .option('-l <snapshot_param>', 'read an internal snapshot of the source')
    .option('-t <cache>', 'output cache mode (default unsafe)')
    .option('-T <src_cache>', 'source cache mode')
    .option('-p', 'show progress')
    .option('--progress <fmt>', 'progress as human text/bar or json lines (vmforge extension)')
    .option('-q', 'quiet')
    .option('-U, --force-share', 'open without locking (vmforge never locks images)')
    .option('-C', 'copy offloading')
    .option('-r <rate_limit>', 'rate limit in bytes per second')
    .option('--salvage', 'copy what can be read, zeros elsewhere')
    .option('--bitmaps', 'copy the persistent bitmaps of the source')
    .option('--skip-broken-bitmaps', 'with --bitmaps, skip inconsistent bitmaps')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported')
    .option('--target-image-opts', 'not supported')
    .action(async (names: string[], opts: Record<string, string | boolean | undefined>) => {
      rejectUnsupported(opts);
      if (opts['targetImageOpts'])
        throw new CliExit(1, '--target-image-opts is not supported by vmforge');
      const rateLimit =
        opts['r'] !== undefined ? cvtnum('rate limit', opts['r'] as string) : undefined;
      const outFmt = (opts['O'] as string | undefined) ?? 'raw';
      const options = opts['o'] as string | undefined;
      if (options !== undefined && hasHelpOption(options)) {
        const lists = createOptionLists(outFmt);
        if (!lists) throw new CliExit(1, `Unknown file format '${outFmt}'`);
        ctx.io.stdout.write(
          `${optionHelp(`Supported ${outFmt}`, lists.format)}\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n`,
        );
        return;
      }
      if (names.length < 2) throw new CliExit(1, 'Must specify image file name');
      const sparse =
        opts['S'] !== undefined
          ? cvtnum('buffer size for sparse output', opts['S'] as string)
          : undefined;
      let coroutines: number | undefined;
      if (opts['m'] !== undefined) {
        coroutines = Number(opts['m']);
        if (!/^\d+$/.test(opts['m'] as string) || coroutines < 1 || coroutines > 16) {
          throw new CliExit(
            1,
            'Invalid number of coroutines. Allowed number of coroutines is between 1 and 16',
          );
        }
      }
      const quiet = Boolean(opts['q']);
      const mode = progressMode(
        ctx.io,
        Boolean(opts['p']),
        opts['progress'] as string | undefined,
        quiet,
      );
      const progress = mode ? progressReporter(ctx.io, mode, 'converting ') : undefined;
      // Ctrl-C / SIGTERM stop the copy cleanly: the source is only read, a new target is removed.
      const abort = new AbortController();
      const onSignal = () => abort.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        await convertImages({
          sources: names.slice(0, -1),
          target: names[names.length - 1]!,
          sourceFormat: formatOption(opts['f'] as string | undefined),
          targetFormat: outFmt,
          options,
          compress: Boolean(opts['c']),
          backingFile: opts['B'] as string | undefined,
          backingFormat: opts['F'] as string | undefined,
          existingTarget: Boolean(opts['n']),
          targetIsZero: Boolean(opts['targetIsZero']),
          ...(sparse !== undefined ? { sparseSize: sparse } : {}),
          ...(coroutines !== undefined ? { coroutines } : {}),
          outOfOrder: Boolean(opts['W']),
          snapshot: snapshotParam(opts['l'] as string | undefined),
          salvage: Boolean(opts['salvage']),
          bitmaps: Boolean(opts['bitmaps']),
          skipBrokenBitmaps: Boolean(opts['skipBrokenBitmaps']),
          copyRange: Boolean(opts['C']),
          cache: cacheMode(opts['t'] as string | undefined, ''),
          sourceCache: cacheMode(opts['T'] as string | undefined, 'source '),
          rateLimit,
          onWarning: (m) => {
            if (!quiet) ctx.io.stderr.write(`vmforge-img: warning: ${m}\n`);
          },
          ...(progress ? { onProgress: progress.update } : {}),
          signal: abort.signal,
        });
      } catch (err) {
        if (abort.signal.aborted) {
          const target = names[names.length - 1]!;
          const what = opts['n']
            ? `'${target}' is partially written`
            : `removed the partial '${target}'`;
          throw new CliExit(130, `convert interrupted; ${what}`);
        }
        throw err;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        progress?.end();
      }
    });
}
