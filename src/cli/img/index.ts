// qemu-img compatible subcommands: one file per command, registered here in qemu-img's order.
import type { Command } from 'commander';
import type { ToolContext } from '../program.js';

type Register = (program: Command, ctx: ToolContext) => void;

// In qemu-img's order (qemu-img-cmds.hx). Each command's module (and the engine code behind it)
// is loaded only when needed: a run of one command does not pay for parsing all the others,
// which was a good part of vmforge-img's start-up time.
const commands: { name: string; load: () => Promise<Register> }[] = [
  { name: 'amend', load: async () => (await import('./amend.js')).registerAmend },
  { name: 'bitmap', load: async () => (await import('./bitmap.js')).registerBitmap },
  { name: 'check', load: async () => (await import('./check.js')).registerCheck },
  { name: 'commit', load: async () => (await import('./commit.js')).registerCommit },
  { name: 'compare', load: async () => (await import('./compare.js')).registerCompare },
  { name: 'convert', load: async () => (await import('./convert.js')).registerConvert },
  { name: 'create', load: async () => (await import('./create.js')).registerCreate },
  { name: 'dd', load: async () => (await import('./dd.js')).registerDd },
  { name: 'info', load: async () => (await import('./info.js')).registerInfo },
  { name: 'map', load: async () => (await import('./map.js')).registerMap },
  { name: 'measure', load: async () => (await import('./measure.js')).registerMeasure },
  { name: 'snapshot', load: async () => (await import('./snapshot.js')).registerSnapshot },
  { name: 'rebase', load: async () => (await import('./rebase.js')).registerRebase },
  { name: 'resize', load: async () => (await import('./resize.js')).registerResize },
];

/** The names of the img subcommands, in qemu-img's order. */
export const imgCommandNames: readonly string[] = commands.map((c) => c.name);

/** Register every img subcommand, or only `only` (a name from imgCommandNames). */
export async function registerImgCommands(
  program: Command,
  ctx: ToolContext,
  only?: string,
): Promise<void> {
  const wanted = only === undefined ? commands : commands.filter((c) => c.name === only);
  const registers = await Promise.all(wanted.map((c) => c.load()));
  for (const register of registers) register(program, ctx);
}

/** What `vmforge-img --version` prints (qemu-img prints its version and copyright). */
export function imgVersionText(): string {
  return 'vmforge-img version 0.1.0 (qemu-img 7.2 compatible)\n';
}
