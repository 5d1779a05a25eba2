// vmforge firmware build --arch aarch64|x86_64 (--source DIR | --git URL --ref TAG)
//   [--debug|--release|--noopt] [-D NAME=VALUE …] [--jobs N] [--toolchain GCC|GCC5] [--dry-run] [--json]

import { Option, type Command } from 'commander';
import { buildFirmware, type BuildFirmwareOptions } from '../../edk2/index.js';
import { CliExit } from '../io.js';
import type { ToolContext } from '../program.js';
import { collect, parsePositiveInt, printJson } from './common.js';
import { progressSink } from './progress.js';

interface BuildOpts {
  arch: string;
  source?: string;
  git?: string;
  ref?: string;
  debug?: boolean;
  release?: boolean;
  noopt?: boolean;
  define?: string[];
  jobs?: number;
  toolchain?: 'GCC' | 'GCC5';
  crossPrefix?: string;
  log?: string;
  cacheDir?: string;
  register?: boolean;
  dryRun?: boolean;
  progress?: boolean;
  json?: boolean;
}

function shellQuote(a: string): string {
  return /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}

export function registerBuild(program: Command, ctx: ToolContext): void {
  program
    .command('build')
    .description('build ArmVirtQemu (aarch64) or OVMF (x86_64) from edk2 and add it to the cache')
    .addOption(
      new Option('--arch <target>', 'aarch64 or x86_64')
        .choices(['aarch64', 'x86_64'])
        .makeOptionMandatory(),
    )
    .option('--source <dir>', 'an edk2 source tree')
    .option('--git <url>', 'clone edk2 from this repository (with --ref)')
    .option('--ref <tag>', 'tag or branch to clone')
    .option('--debug', 'DEBUG build')
    .option('--release', 'RELEASE build (default)')
    .option('--noopt', 'NOOPT build')
    .option('-D, --define <NAME=VALUE>', 'edk2 build define (repeatable)', collect)
    .option('--jobs <n>', 'parallel jobs (default: CPU count)', parsePositiveInt('job count'))
    .addOption(
      new Option('--toolchain <tag>', 'toolchain tag (default: newest in the tree)').choices([
        'GCC',
        'GCC5',
      ]),
    )
    .option(
      '--cross-prefix <prefix>',
      'cross compiler prefix (default aarch64-linux-gnu- / x86_64-linux-gnu- when not native)',
    )
    .option('--log <file>', 'build log (default <tree>/Build/vmforge-build-<arch>.log)')
    .option('--cache-dir <dir>', 'firmware cache to register the result in')
    .option('--no-register', 'do not add the result to the cache')
    .option('--dry-run', 'check prerequisites and print the commands without running them')
    .option('-p, --progress', 'print progress even when stderr is not a terminal')
    .option('--json', 'machine-readable output')
    .action(async (o: BuildOpts) => {
      const targets = [o.debug && 'DEBUG', o.release && 'RELEASE', o.noopt && 'NOOPT'].filter(
        Boolean,
      );
      if (targets.length > 1)
        throw new CliExit(1, 'Give only one of --debug, --release, --noopt', true);
      if (o.git !== undefined && o.ref === undefined)
        throw new CliExit(1, '--git needs --ref TAG', true);
      if (o.ref !== undefined && o.git === undefined)
        throw new CliExit(1, '--ref needs --git URL', true);
      const sink = progressSink(ctx.io, o.progress === true);
      const opts: BuildFirmwareOptions = {
        arch: o.arch,
        env: ctx.io.env,
        ...(o.source ? { source: o.source } : {}),
        ...(o.git && o.ref ? { git: { url: o.git, ref: o.ref } } : {}),
        ...(targets[0] ? { target: targets[0] as 'DEBUG' | 'RELEASE' | 'NOOPT' } : {}),
        ...(o.define ? { defines: o.define } : {}),
        ...(o.jobs ? { jobs: o.jobs } : {}),
        ...(o.toolchain ? { toolchain: o.toolchain } : {}),
        ...(o.crossPrefix !== undefined ? { crossPrefix: o.crossPrefix } : {}),
        ...(o.log ? { logFile: o.log } : {}),
        ...(o.register === false
          ? { cacheDir: false as const }
          : o.cacheDir
            ? { cacheDir: o.cacheDir }
            : {}),
        ...(o.dryRun ? { dryRun: true } : {}),
        onProgress: (e) =>
          sink.update(
            e.modules
              ? `${e.phase}: ${e.modules} modules (${e.message})`
              : `${e.phase}: ${e.message}`,
          ),
      };
      try {
        const r = await buildFirmware(opts);
        sink.succeed();
        if (o.json) {
          printJson(ctx.io, {
            ...(r.manifest
              ? {
                  path: r.manifest.code.path,
                  vars: r.manifest.vars?.path,
                  descriptor: r.manifest.descriptor,
                }
              : {}),
            outputs: r.outputs,
            log: r.logPath,
            toolchain: r.plan.toolchain,
            target: r.plan.target,
            defines: Object.fromEntries(r.plan.defines),
            notes: r.plan.notes,
            steps: r.plan.steps.map((s) => ({ cwd: s.cwd, argv: [s.file, ...s.args] })),
            env: r.plan.env,
            'duration-seconds': Math.round(r.durationMs / 1000),
          });
          return;
        }
        if (o.dryRun) {
          const lines = r.plan.notes.map((n) => `# ${n}`);
          lines.push(...Object.entries(r.plan.env).map(([k, v]) => `export ${k}=${shellQuote(v)}`));
          for (const s of r.plan.steps)
            lines.push(
              `(cd ${shellQuote(s.cwd)} && ${[s.file, ...s.args].map(shellQuote).join(' ')})`,
            );
          ctx.io.stdout.write(`${lines.join('\n')}\n`);
          return;
        }
        for (const n of r.plan.notes) ctx.io.stderr.write(`note: ${n}\n`);
        const code = r.manifest?.code.path ?? r.outputs!.code;
        const vars = r.manifest?.vars?.path ?? r.outputs!.vars;
        ctx.io.stdout.write(`${code}\n${vars ? `${vars}\n` : ''}`);
      } catch (err) {
        sink.fail();
        throw err;
      }
    });
}
