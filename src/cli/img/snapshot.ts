// qemu-img snapshot [--object objectdef] [--image-opts] [-U] [-q] [-l | -a snapshot |
//   -c snapshot | -d snapshot] filename
// Like qemu-img: no -f (the format is probed), one action at most ("Cannot mix ..."), and
// without an action the image is opened read-write and closed again.
import type { Command } from 'commander';
import { isVmforgeError } from '../../core/index.js';
import {
  applyImageSnapshot,
  createImageSnapshot,
  deleteImageSnapshot,
  listImageSnapshots,
  touchImageForSnapshot,
  type ImageSnapshotOptions,
} from '../../img/snapshot.js';
import { formatSnapshotList } from '../output/index.js';
import { usageError } from '../io.js';
import { oneFilename, rejectUnsupported, writeBytes, type ToolContext } from './common.js';

type Action = 'l' | 'a' | 'c' | 'd';

export function registerSnapshot(program: Command, ctx: ToolContext): void {
  const actions: Action[] = [];
  const cmd = program
    .command('snapshot')
    .description('list, apply, create or delete internal snapshots')
    .argument('[filename...]')
    .option('-l', 'list snapshots')
    .option('-a <snapshot>', 'apply a snapshot (by id or name)')
    .option('-c <snapshot>', 'create a snapshot')
    .option('-d <snapshot>', 'delete a snapshot (by name)')
    .option('-q', 'quiet')
    .option('-U, --force-share', 'open without locking (vmforge never locks images)')
    .option('--object <objectdef>', 'not supported')
    .option('--image-opts', 'not supported');
  for (const flag of ['l', 'a', 'c', 'd'] as const) {
    // getopt order: the second action flag is the error, even a repeated one.
    cmd.on(`option:${flag}`, () => {
      actions.push(flag);
      if (actions.length > 1) throw usageError("Cannot mix '-l', '-a', '-c', '-d'");
    });
  }
  cmd.action(async (args: string[], opts: Record<string, string | boolean | undefined>) => {
    rejectUnsupported(opts);
    const filename = oneFilename(args);
    const action = actions[0];
    // -q changes nothing visible in qemu-img snapshot either: success is silent, errors and
    // the raw-probing warning are printed regardless.
    const options: ImageSnapshotOptions = {
      onWarning: (m) => ctx.io.stderr.write(`${m}\n`),
    };
    try {
      switch (action) {
        case 'l':
          writeBytes(ctx.io.stdout, formatSnapshotList(await listImageSnapshots(filename, {})));
          break;
        case 'c':
          await createImageSnapshot(filename, opts['c'] as string, options);
          break;
        case 'a':
          await applyImageSnapshot(filename, opts['a'] as string, options);
          break;
        case 'd':
          await deleteImageSnapshot(filename, opts['d'] as string, options);
          break;
        default:
          await touchImageForSnapshot(filename, options);
      }
    } catch (err) {
      // Lines QEMU reports on their own before the final error (error_report_err).
      const preface = isVmforgeError(err) ? err.details['preface'] : undefined;
      if (Array.isArray(preface)) {
        for (const line of preface) ctx.io.stderr.write(`${ctx.tool}: ${String(line)}\n`);
      }
      throw err;
    }
  });
}
