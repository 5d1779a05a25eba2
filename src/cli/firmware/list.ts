// vmforge firmware list [--arch A] [--json]: every descriptor in precedence order.

import { listFirmware, type FirmwareEntry } from '../../edk2/index.js';
import type { Command } from 'commander';
import type { ToolContext } from '../program.js';
import { printJson } from './common.js';

function summary(e: FirmwareEntry): string {
  const d = e.descriptor!;
  const targets = d.targets.map((t) => `${t.architecture}:${t.machines.join('|')}`).join(' ');
  const mapping = d.mapping.device === 'flash' ? `flash/${d.mapping.mode}` : d.mapping.device;
  const lines = [
    `${e.name}`,
    `    ${d.description}`,
    `    targets: ${targets}  interfaces: ${d['interface-types'].join(',')}  mapping: ${mapping}`,
    `    features: ${d.features.join(', ') || '(none)'}`,
    `    ${e.path}${e.overrides.length ? ` (overrides ${e.overrides.join(', ')})` : ''}`,
  ];
  return lines.join('\n');
}

export function registerList(program: Command, ctx: ToolContext): void {
  program
    .command('list')
    .description('list firmware descriptors (docs/interop/firmware.json) in precedence order')
    .option('--arch <target>', 'only descriptors for this QEMU target')
    .option('--cache-dir <dir>', "vmforge's firmware cache (its descriptors are listed last)")
    .option('--json', 'machine-readable output')
    .action(async (o: { arch?: string; cacheDir?: string; json?: boolean }) => {
      const list = await listFirmware({
        env: ctx.io.env,
        ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
      });
      const entries = o.arch
        ? list.entries.filter((e) => e.descriptor?.targets.some((t) => t.architecture === o.arch))
        : list.entries;
      if (o.json) {
        printJson(ctx.io, { dirs: list.dirs, entries, masked: list.masked });
        return;
      }
      const out: string[] = [];
      for (const e of entries)
        out.push(e.descriptor ? summary(e) : `${e.name}\n    INVALID: ${e.error}\n    ${e.path}`);
      for (const m of list.masked)
        out.push(
          `${m.name}\n    masked by ${m.path}${m.hides.length ? ` (hides ${m.hides.join(', ')})` : ''}`,
        );
      if (out.length === 0) out.push(`No firmware descriptors in ${list.dirs.join(', ')}`);
      ctx.io.stdout.write(`${out.join('\n')}\n`);
    });
}
