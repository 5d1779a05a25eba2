// vmforge firmware fetch URL|NAME --sha256 HEX [--member PATH] [--vars-member PATH] [--arch A]
//   [--cache-dir DIR] [--timeout S] [--retries N] [-p] [--json]

import { Option, type Command } from 'commander';
import { fetchFirmware, type FetchFirmwareOptions } from '../../edk2/index.js';
import type { ToolContext } from '../program.js';
import { collect, parsePositiveInt, parseSeconds, printJson } from './common.js';
import { progressSink, transferText } from './progress.js';

interface FetchOpts {
  sha256?: string;
  member?: string;
  varsMember?: string;
  arch?: string;
  mode?: FetchFirmwareOptions['mode'];
  feature?: string[];
  machine?: string[];
  cacheDir?: string;
  timeout?: number;
  retries?: number;
  progress?: boolean;
  json?: boolean;
}

export function registerFetch(program: Command, ctx: ToolContext): void {
  program
    .command('fetch')
    .description('download firmware, verify its SHA-256, unpack it and add it to the cache')
    .argument('<source>', 'http(s) URL, or a catalogue name')
    .option('--sha256 <hex>', 'expected SHA-256 of the download (required for URLs)')
    .option('--member <path>', 'the code image inside a .tar/.tar.gz/.zip archive')
    .option('--vars-member <path>', 'the vars template inside the same archive')
    .option('--arch <target>', 'QEMU target the firmware is for (default: the host)')
    .addOption(
      new Option('--mode <mode>', 'flash mode for the descriptor').choices([
        'split',
        'combined',
        'stateless',
      ]),
    )
    .option('--feature <name>', 'descriptor feature to record (repeatable)', collect)
    .option(
      '--machine <glob>',
      'machine glob to record (repeatable; default virt-* or pc-q35-*/pc-i440fx-*)',
      collect,
    )
    .option('--cache-dir <dir>', 'firmware cache (default ~/.cache/vmforge/firmware)')
    .option(
      '--timeout <seconds>',
      'connect/response/stall timeout (default 30)',
      parseSeconds('timeout'),
    )
    .option('--retries <n>', 'extra attempts on transient errors (default 3)', (v) =>
      v === '0' ? 0 : parsePositiveInt('retries')(v),
    )
    .option('-p, --progress', 'print progress even when stderr is not a terminal')
    .option('--json', 'machine-readable output')
    .action(async (source: string, o: FetchOpts) => {
      const sink = progressSink(ctx.io, o.progress === true);
      try {
        const r = await fetchFirmware({
          source,
          env: ctx.io.env,
          ...(o.sha256 ? { sha256: o.sha256 } : {}),
          ...(o.member ? { member: o.member } : {}),
          ...(o.varsMember ? { varsMember: o.varsMember } : {}),
          ...(o.arch ? { arch: o.arch } : {}),
          ...(o.mode ? { mode: o.mode } : {}),
          ...(o.feature ? { features: o.feature } : {}),
          ...(o.machine ? { machines: o.machine } : {}),
          ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
          ...(o.timeout !== undefined ? { timeoutMs: o.timeout * 1000 } : {}),
          ...(o.retries !== undefined ? { retries: o.retries } : {}),
          onProgress: (p) =>
            sink.update(
              p.phase === 'download'
                ? `downloading ${transferText(p.received ?? 0, p.total, ctx.io.stderr.isTTY !== true)}${(p.attempt ?? 1) > 1 ? ` (attempt ${p.attempt})` : ''}`
                : (p.message ?? p.phase),
            ),
        });
        sink.succeed();
        if (o.json) {
          printJson(ctx.io, {
            path: r.path,
            ...(r.vars ? { vars: r.vars } : {}),
            sha256: r.sha256,
            size: r.size,
            source: r.source,
            ...(r.member ? { member: r.member } : {}),
            descriptor: r.descriptor,
          });
          return;
        }
        ctx.io.stdout.write(`${r.path}\n`);
      } catch (err) {
        sink.fail();
        throw err;
      }
    });
}
