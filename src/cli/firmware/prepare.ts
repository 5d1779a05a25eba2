// vmforge firmware prepare [--arch A] [--code FILE] [--vars-template FILE] --out DIR [--json]

import type { Command } from 'commander';
import { prepareFirmware } from '../../edk2/index.js';
import type { ToolContext } from '../program.js';
import { printJson } from './common.js';
import { addSelectionOptions, findOptions } from './find.js';

export function registerPrepare(program: Command, ctx: ToolContext): void {
  addSelectionOptions(program.command('prepare'))
    .description('make per-VM pflash files: a code copy and a vars copy (64 MiB each on aarch64)')
    .requiredOption('--out <dir>', 'directory for the per-VM files')
    .option('--code <file>', 'firmware code image (default: found from the descriptors)')
    .option('--vars-template <file>', 'vars template to copy (default: the descriptor’s)')
    .option('--reset-vars', 'replace an existing vars file in --out (it holds the VM’s variables)')
    .option('--json', 'machine-readable output')
    .action(
      async (
        o: Parameters<typeof findOptions>[0] & {
          out: string;
          code?: string;
          varsTemplate?: string;
          resetVars?: boolean;
          json?: boolean;
        },
      ) => {
        const r = await prepareFirmware({
          ...findOptions(o, ctx),
          outDir: o.out,
          ...(o.code ? { code: o.code } : {}),
          ...(o.varsTemplate ? { varsTemplate: o.varsTemplate } : {}),
          ...(o.resetVars ? { resetVars: true } : {}),
        });
        if (o.json) {
          printJson(ctx.io, {
            code: r.code.path,
            ...(r.vars ? { vars: r.vars.path } : {}),
            format: r.code.format,
            ...(r.vars ? { 'vars-format': r.vars.format } : {}),
            arch: r.arch,
            mode: r.mode,
            padded: r.padded,
            'qemu-args': r.qemuArgs,
            ...(r.machineProperties.length ? { 'machine-properties': r.machineProperties } : {}),
            ...(r.globals.length ? { globals: r.globals } : {}),
            ...(r.match ? { descriptor: r.match.descriptorPath } : {}),
            notes: r.notes,
          });
          return;
        }
        ctx.io.stdout.write(`${r.code.path}\n${r.vars ? `${r.vars.path}\n` : ''}`);
      },
    );
}
