// qemu-img check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename
// The flow of qemu-img.c img_check(): diagnostics on stderr as they are found, the repair summary
// (human output) between the repairing pass and the re-check, the result on stdout, then
// "Check failed" on stderr and the exit code (0 clean, 1 failed, 2 corrupt, 3 leaks, 63 no check).
import type { Command } from 'commander';
import { checkImage } from '../../img/check.js';
import { formatCheckHuman, formatCheckJson, formatRepairSummary } from '../output/index.js';
import { CliExit, usageError } from '../io.js';
import {
  formatOption,
  oneFilename,
  parseOutput,
  rejectUnsupported,
  writeBytes,
  type ToolContext,
} from './common.js';

const CACHE_MODES = ['none', 'writeback', 'writethrough', 'directsync', 'unsafe'] as const;
type CacheMode = (typeof CACHE_MODES)[number];

export function registerCheck(program: Command, ctx: ToolContext): void {
  program
    .command('check')
    .description('check (and repair) an image for consistency')
    .argument('[filename...]')
    .option('-f <fmt>', 'image format (probed when absent)')
    .option('-r <mode>', "repair: 'leaks' (leaked clusters only) or 'all'")
    .option('--output <ofmt>', 'human or json')
    .option('-T <src_cache>', 'cache mode for the image file')
    .option('-q', 'quiet: no output on stdout')
    .option('-U, --force-share', 'open without locking (vmforge never locks images)')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported')
    .action(async (args: string[], opts: Record<string, string | boolean | undefined>) => {
      rejectUnsupported(opts);
      const r = opts['r'] as string | undefined;
      if (r !== undefined && r !== 'leaks' && r !== 'all') {
        throw usageError(`Unknown option value for -r (expecting 'leaks' or 'all'): ${r}`);
      }
      const filename = oneFilename(args);
      const output = parseOutput(opts['output'] as string | undefined);
      const cache = opts['T'] as string | undefined;
      if (cache !== undefined && !(CACHE_MODES as readonly string[]).includes(cache)) {
        throw new CliExit(1, `Invalid source cache option: ${cache}`);
      }
      const quiet = Boolean(opts['q']);
      const { stdout, stderr } = ctx.io;

      const out = await checkImage(filename, {
        format: formatOption(opts['f'] as string | undefined),
        repair: r as 'leaks' | 'all' | undefined,
        cache: cache as CacheMode | undefined,
        // fprintf(stderr) lines as they are found; error_report() lines with the tool's name.
        onMessage: (m) => writeBytes(stderr, `${m.report ? `${ctx.tool}: ` : ''}${m.text}\n`),
        onRepaired: (fixed) => {
          if (output === 'human' && !quiet) {
            stdout.write(formatRepairSummary(fixed.leaksFixed, fixed.corruptionsFixed));
          }
        },
      });
      if (out.result && !quiet) {
        writeBytes(
          stdout,
          output === 'json' ? formatCheckJson(out.result) : formatCheckHuman(out.result),
        );
      }
      if (out.exitCode !== 0) throw new CliExit(out.exitCode, out.error ?? '');
    });
}
