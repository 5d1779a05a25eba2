// qemu-img measure [--output=ofmt] [-O output_fmt] [-o options]
//                  [--size N | [--object objectdef] [--image-opts] [-f fmt] [-l snapshot_param] filename]
// The checks and messages follow qemu-img.c img_measure(), in its order.
import type { Command } from 'commander';
import type { BlockDevice } from '../../block/device.js';
import { InvalidArgumentError, isVmforgeError, strtosz } from '../../core/index.js';
import { openImage } from '../../image/open.js';
import { measureImage, MeasureOptionsError, MeasureStatusError } from '../../img/measure.js';
import {
  loadSnapshotTmp,
  parseSnapshotParam,
  SnapshotParamHelp,
  type SnapshotSelector,
} from '../../img/snapshot-param.js';
import { formatMeasureHuman, formatMeasureJson } from '../output/index.js';
import { CliExit } from '../io.js';
import { collect } from '../program.js';
import { formatOption, parseOutput, writeBytes, type ToolContext } from './common.js';
import { reportIoError } from './io-errors.js';
import { accumulateOptions } from './option-list.js';

const INT64_MAX = 0x7fff_ffff_ffff_ffffn;

/** cvtnum("image size", text) over the whole int64 range, with qemu-img's two-line message. */
export function cvtnumInt64(ctx: ToolContext, name: string, text: string, min = 0n): bigint {
  const r = strtosz(text);
  if (!r.ok && r.reason === 'invalid') {
    throw new CliExit(
      1,
      `Invalid ${name} specified. You may use k, M, G, T, P or E suffixes for\n${ctx.tool}: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.`,
    );
  }
  if (!r.ok || r.value > INT64_MAX || r.value < min) {
    throw new CliExit(1, `Invalid ${name} specified. Must be between ${min} and ${INT64_MAX}.`);
  }
  return r.value;
}

export function registerMeasure(program: Command, ctx: ToolContext): void {
  program
    .command('measure')
    .description('calculate the file size required for a new image')
    .argument('[filename...]')
    .option('--output <ofmt>', 'human or json')
    .option('-O <output_fmt>', 'target image format (default raw)')
    .option('-o <options>', 'target format options (size-related ones count)', collect)
    .option('--size <N>', 'virtual size of a new image (instead of a filename)', collect)
    .option('-f <fmt>', 'source image format (probed when absent)')
    .option('-l <snapshot_param>', 'measure an internal snapshot of the source', collect)
    .option('-U, --force-share', 'open without locking (vmforge never locks images)')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported')
    .action(async (args: string[], opts: Record<string, unknown>) => {
      if (opts['object'] !== undefined) {
        throw new CliExit(
          1,
          '--object is not supported by vmforge (no secrets or other QEMU objects)',
        );
      }
      const output = parseOutput(opts['output'] as string | undefined);
      const options = accumulateOptions(opts['o'] as string[] | undefined);
      let snapshot: SnapshotSelector | undefined;
      for (const param of (opts['l'] as string[] | undefined) ?? []) {
        try {
          snapshot = parseSnapshotParam(param, (w) => ctx.io.stderr.write(`${ctx.tool}: ${w}\n`));
        } catch (err) {
          if (err instanceof SnapshotParamHelp) {
            ctx.io.stdout.write(err.help);
            throw new CliExit(1, `Failed in parsing snapshot param '${param}'`);
          }
          if (!(err instanceof InvalidArgumentError)) throw err;
          throw new CliExit(
            1,
            `${err.message}\n${ctx.tool}: Failed in parsing snapshot param '${param}'`,
          );
        }
      }
      let size: bigint | undefined;
      for (const text of (opts['size'] as string[] | undefined) ?? []) {
        size = cvtnumInt64(ctx, 'image size', text);
      }

      if (args.length > 1) throw new CliExit(1, 'At most one filename argument is allowed.');
      const filename = args[0];
      const fmt = opts['f'] as string | undefined;
      if (filename === undefined && (opts['imageOpts'] || fmt !== undefined || snapshot)) {
        throw new CliExit(1, '--image-opts, -f, and -l require a filename argument.');
      }
      if (filename !== undefined && size !== undefined) {
        throw new CliExit(1, '--size N cannot be used together with a filename.');
      }
      if (filename === undefined && size === undefined) {
        throw new CliExit(1, 'Either --size N or one filename must be specified.');
      }
      if (opts['imageOpts']) throw new CliExit(1, '--image-opts is not supported by vmforge');

      let source: BlockDevice | undefined;
      try {
        if (filename !== undefined) {
          source = await openImage(filename, { format: formatOption(fmt), readOnly: true });
          if (snapshot) {
            try {
              await loadSnapshotTmp(source, snapshot);
            } catch (err) {
              if (isVmforgeError(err)) err.message = `Failed to load snapshot: ${err.message}`;
              throw err;
            }
          }
        }
        let info;
        try {
          info = await measureImage({
            format: (opts['O'] as string | undefined) ?? 'raw',
            ...(options !== undefined ? { options } : {}),
            ...(size !== undefined ? { size } : {}),
            ...(source ? { source } : {}),
          });
        } catch (err) {
          if (err instanceof MeasureOptionsError) {
            throw new CliExit(
              1,
              `${err.message}\n${ctx.tool}: Invalid options for file format '${err.format}'`,
            );
          }
          if (err instanceof MeasureStatusError) {
            throw new CliExit(1, `${err.message}: ${reportIoError(ctx, err.cause)}`);
          }
          throw err;
        }
        writeBytes(
          ctx.io.stdout,
          output === 'json' ? formatMeasureJson(info) : formatMeasureHuman(info),
        );
      } finally {
        await source?.close();
      }
    });
}
