// qemu-img info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename
import type { Command } from 'commander';
import { imageInfo, imageInfoChain } from '../../img/info.js';
import {
  formatInfoChainHuman,
  formatInfoChainJson,
  formatInfoHuman,
  formatInfoJson,
} from '../output/index.js';
import {
  formatOption,
  oneFilename,
  parseOutput,
  rejectUnsupported,
  writeBytes,
  type ToolContext,
} from './common.js';

export function registerInfo(program: Command, ctx: ToolContext): void {
  program
    .command('info')
    .description('display information about a disk image')
    .argument('[filename...]')
    .option('-f <fmt>', 'image format (probed when absent)')
    .option('--output <ofmt>', 'human or json')
    .option('--backing-chain', 'show the whole backing chain')
    .option('-U, --force-share', 'open without locking (vmforge never locks images)')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported')
    .action(async (args: string[], opts: Record<string, string | boolean | undefined>) => {
      rejectUnsupported(opts);
      const output = parseOutput(opts['output'] as string | undefined);
      const filename = oneFilename(args);
      const format = formatOption(opts['f'] as string | undefined);
      if (opts['backingChain']) {
        const chain = await imageInfoChain(filename, { format });
        writeBytes(
          ctx.io.stdout,
          output === 'json' ? formatInfoChainJson(chain) : formatInfoChainHuman(chain),
        );
      } else {
        const info = await imageInfo(filename, { format });
        writeBytes(ctx.io.stdout, output === 'json' ? formatInfoJson(info) : formatInfoHuman(info));
      }
    });
}
