// vmforge firmware find --arch A [--machine M] [--secure-boot|--no-secure-boot]
//   [--enrolled-keys|--no-enrolled-keys] [--feature F …] [--without-feature F …] [--json]

import { Option, type Command } from 'commander';
import { findFirmware, type FindFirmwareOptions } from '../../edk2/index.js';
import type { ToolContext } from '../program.js';
import { collect, printJson } from './common.js';

interface FindOpts {
  arch?: string;
  machine?: string;
  secureBoot?: boolean;
  enrolledKeys?: boolean;
  feature?: string[];
  withoutFeature?: string[];
  mode?: FindFirmwareOptions['mode'];
  format?: string;
  cacheDir?: string;
  json?: boolean;
}

export function findOptions(o: FindOpts, ctx: ToolContext): FindFirmwareOptions {
  return {
    env: ctx.io.env,
    ...(o.arch ? { arch: o.arch } : {}),
    ...(o.machine ? { machine: o.machine } : {}),
    ...(o.secureBoot !== undefined ? { secureBoot: o.secureBoot } : {}),
    ...(o.enrolledKeys !== undefined ? { enrolledKeys: o.enrolledKeys } : {}),
    ...(o.feature ? { features: o.feature } : {}),
    ...(o.withoutFeature ? { withoutFeatures: o.withoutFeature } : {}),
    ...(o.mode ? { mode: o.mode } : {}),
    ...(o.format ? { format: o.format } : {}),
    ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
  };
}

/** The selection options find and prepare share. */
export function addSelectionOptions(cmd: Command): Command {
  return cmd
    .option('--arch <target>', 'QEMU target: aarch64, x86_64, ... (default: the host)')
    .option(
      '--machine <type>',
      'machine type or alias: virt, q35, pc-q35-7.2 (default: virt on ARM, q35 on x86)',
    )
    .option('--secure-boot', 'require Secure Boot support')
    .option('--no-secure-boot', 'refuse Secure Boot firmware')
    .option('--enrolled-keys', 'require a vars template with keys enrolled (implies --secure-boot)')
    .option('--no-enrolled-keys', 'refuse vars templates with enrolled keys')
    .option(
      '--feature <name>',
      'require a descriptor feature (repeatable), e.g. requires-smm',
      collect,
    )
    .option('--without-feature <name>', 'refuse a descriptor feature (repeatable)', collect)
    .addOption(
      new Option('--mode <mode>', 'flash mode').choices(['split', 'combined', 'stateless', 'any']),
    )
    .option('--format <fmt>', 'only firmware in this block format (raw, qcow2)')
    .option('--cache-dir <dir>', "vmforge's firmware cache");
}

export function registerFind(program: Command, ctx: ToolContext): void {
  addSelectionOptions(program.command('find'))
    .description('find the firmware QEMU should use for an architecture, machine and features')
    .option('--json', 'machine-readable output')
    .action(async (o: FindOpts) => {
      const m = await findFirmware(findOptions(o, ctx));
      if (o.json) {
        printJson(ctx.io, {
          name: m.name,
          path: m.descriptorPath,
          descriptor: m.descriptor,
          arch: m.arch,
          machine: m.machine,
          code: m.code,
          ...(m.varsTemplate ? { 'vars-template': m.varsTemplate } : {}),
        });
        return;
      }
      const lines = [`code: ${m.code.path} (${m.code.format})`];
      if (m.varsTemplate)
        lines.push(`vars-template: ${m.varsTemplate.path} (${m.varsTemplate.format})`);
      lines.push(`descriptor: ${m.descriptorPath}`);
      lines.push(`machine: ${m.machine.concrete}`);
      if (m.features.length) lines.push(`features: ${m.features.join(', ')}`);
      ctx.io.stdout.write(`${lines.join('\n')}\n`);
    });
}
