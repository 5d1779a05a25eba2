// qemu-img snapshot [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename
import type { Command } from 'commander';
import { openImage, isQcow2 } from '../../image/open.js';
import { describeImage } from '../../img/info.js';
import { formatSnapshotList } from '../output/index.js';
import { CliExit } from '../io.js';
import {
  formatOption,
  oneFilename,
  rejectUnsupported,
  writeBytes,
  type ToolContext,
} from './common.js';

export function registerSnapshot(program: Command, ctx: ToolContext): void {
  program
    .command('snapshot')
    .description('list, apply, create or delete internal snapshots')
    .argument('[filename...]')
    .option('-f <fmt>', 'image format (probed when absent)')
    .option('-l', 'list snapshots (the default)')
    .option('-a <snapshot>', 'apply a snapshot')
    .option('-c <snapshot>', 'create a snapshot')
    .option('-d <snapshot>', 'delete a snapshot')
    .option('-q', 'quiet')
    .option('-U, --force-share', 'open without locking (vmforge never locks images)')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported')
    .action(async (args: string[], opts: Record<string, string | boolean | undefined>) => {
      rejectUnsupported(opts);
      const filename = oneFilename(args);
      for (const flag of ['a', 'c', 'd'] as const) {
        if (opts[flag] !== undefined) {
          throw new CliExit(
            1,
            `snapshot -${flag} is not implemented yet (vmforge lists snapshots with -l)`,
          );
        }
      }
      const dev = await openImage(filename, {
        format: formatOption(opts['f'] as string | undefined),
        backing: 'none',
        noIO: true,
      });
      try {
        if (!isQcow2(dev)) return; // raw has no snapshots: qemu-img prints nothing
        const info = await describeImage(dev);
        writeBytes(ctx.io.stdout, formatSnapshotList(info.snapshots ?? []));
      } finally {
        await dev.close();
      }
    });
}
