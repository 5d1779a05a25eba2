// qemu-img compatible subcommands: one file per command, registered here in qemu-img's order.
import type { Command } from 'commander';
import type { ToolContext } from '../program.js';

import { registerAmend } from './amend.js';
import { registerBitmap } from './bitmap.js';
import { registerCheck } from './check.js';
import { registerCommit } from './commit.js';
import { registerCompare } from './compare.js';
import { registerConvert } from './convert.js';
import { registerCreate } from './create.js';
import { registerDd } from './dd.js';
import { registerInfo } from './info.js';
import { registerMap } from './map.js';
import { registerMeasure } from './measure.js';
import { registerRebase } from './rebase.js';
import { registerResize } from './resize.js';
import { registerSnapshot } from './snapshot.js';

type Register = (program: Command, ctx: ToolContext) => void;

// In qemu-img's order (qemu-img-cmds.hx).
const commands: Register[] = [
  registerAmend,
  registerBitmap,
  registerCheck,
  registerCommit,
  registerCompare,
  registerConvert,
  registerCreate,
  registerDd,
  registerInfo,
  registerMap,
  registerMeasure,
  registerSnapshot,
  registerRebase,
  registerResize,
];

export function registerImgCommands(program: Command, ctx: ToolContext): void {
  for (const register of commands) register(program, ctx);
}

/** What `vmforge-img --version` prints (qemu-img prints its version and copyright). */
export function imgVersionText(): string {
  return 'vmforge-img version 0.1.0 (qemu-img 7.2 compatible)\n';
}
