// qemu-img dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks]
//             [skip=blocks] if=input of=output
// Operands are parsed in order with img_dd()'s messages; every failure exits with status 1.
import type { Command } from 'commander';
import { strtosz } from '../../core/index.js';
import { ddImage, DdIoError } from '../../img/dd.js';
import { CliExit } from '../io.js';
import { formatOption, type ToolContext } from './common.js';
import { reportIoError } from './io-errors.js';
import { cvtnumInt64 } from './measure.js';

export interface DdOperands {
  blockSize: number;
  count?: bigint;
  skip?: bigint;
  input?: string;
  output?: string;
}

/** img_dd()'s operand loop: "name=value" with bs, count, if, of, skip. */
export function parseDdOperands(ctx: ToolContext, operands: readonly string[]): DdOperands {
  const out: DdOperands = { blockSize: 512 };
  for (const arg of operands) {
    const eq = arg.indexOf('=');
    if (eq < 0) throw new CliExit(1, `unrecognized operand ${arg}`);
    const name = arg.slice(0, eq);
    const value = arg.slice(eq + 1);
    switch (name) {
      case 'bs': {
        // cvtnum_full("bs", arg, 1, INT_MAX)
        const r = strtosz(value);
        if (!r.ok && r.reason === 'invalid') {
          throw new CliExit(
            1,
            `Invalid bs specified. You may use k, M, G, T, P or E suffixes for\n${ctx.tool}: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.`,
          );
        }
        if (!r.ok || r.value > 0x7fff_ffffn || r.value < 1n) {
          throw new CliExit(1, 'Invalid bs specified. Must be between 1 and 2147483647.');
        }
        out.blockSize = Number(r.value);
        break;
      }
      case 'count':
        out.count = cvtnumInt64(ctx, 'count', value);
        break;
      case 'skip':
        out.skip = cvtnumInt64(ctx, 'skip', value);
        break;
      case 'if':
        out.input = value;
        break;
      case 'of':
        out.output = value;
        break;
      default:
        throw new CliExit(1, `unrecognized operand ${name}`);
    }
  }
  return out;
}

export function registerDd(program: Command, ctx: ToolContext): void {
  program
    .command('dd')
    .description('copy from input to output, converting the format')
    .argument('[operands...]', 'bs=BYTES count=N skip=N if=FILE of=FILE')
    .option('-f <fmt>', 'input image format (probed when absent)')
    .option('-O <output_fmt>', 'output image format (default raw)')
    .option('-U, --force-share', 'open without locking (vmforge never locks images)')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported')
    .action(async (operands: string[], opts: Record<string, string | boolean | undefined>) => {
      if (opts['object'] !== undefined) {
        throw new CliExit(
          1,
          '--object is not supported by vmforge (no secrets or other QEMU objects)',
        );
      }
      const dd = parseDdOperands(ctx, operands);
      if (dd.input === undefined || dd.output === undefined) {
        throw new CliExit(1, 'Must specify both input and output files');
      }
      if (opts['imageOpts']) throw new CliExit(1, '--image-opts is not supported by vmforge');
      try {
        await ddImage({
          input: dd.input,
          output: dd.output,
          inputFormat: formatOption(opts['f'] as string | undefined),
          outputFormat: (opts['O'] as string | undefined) ?? 'raw',
          blockSize: dd.blockSize,
          count: dd.count,
          skip: dd.skip,
          onWarning: (message) => ctx.io.stderr.write(`${ctx.tool}: ${message}\n`),
        });
      } catch (err) {
        if (err instanceof DdIoError) {
          throw new CliExit(1, `${err.message}: ${reportIoError(ctx, err.cause)}`);
        }
        throw err;
      }
    });
}
