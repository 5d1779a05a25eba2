// `vmforge run SPEC`: boot a VM from a spec and, with --wait-for, succeed once the guest printed
// the marker. Exit codes: 0 success; 1 error (bad spec, QEMU failed to start or exited with an
// error); 2 the guest stopped before the marker appeared; 124 timeout (as timeout(1)).

import { resolve } from 'node:path';
import {
  buildArgv,
  describeExit,
  loadSpec,
  QemuExitError,
  planLaunch,
  SerialEndedError,
  SerialTimeoutError,
  Vm,
  type LaunchOptions,
} from '../../qemu/index.js';
import { CliExit, usageError, type CliIO } from '../io.js';
import { collect, Option, type Command } from '../program.js';

export const EXIT_GUEST_STOPPED = 2;
export const EXIT_TIMEOUT = 124;

export interface RunCliOptions {
  dryRun?: boolean;
  waitFor?: string;
  timeout?: string;
  set?: string[];
  serialLog?: string;
  keepRunning?: boolean;
}

/** Hooks for tests: launch options merged into every launch (providers, runDir…). */
export interface RunHooks {
  launch?: LaunchOptions;
}

export function registerRun(program: Command, io: CliIO, hooks: RunHooks = {}): void {
  program
    .command('run')
    .description('boot a VM from a YAML/JSON spec')
    .argument('<spec>', 'VM spec file (.yaml, .yml or .json)')
    .option('--dry-run', 'print the QEMU argv, one argument per line, and exit')
    .option('--wait-for <regex>', 'succeed once the serial console matches REGEX')
    .option('--timeout <seconds>', 'give up after SECONDS (exit 124)')
    .addOption(
      new Option('--set <path=value>', 'override a spec field (repeatable)').argParser(collect),
    )
    .option('--serial-log <file>', 'write the serial console to FILE')
    .option('--keep-running', 'leave the VM running when vmforge exits (after --wait-for matched)')
    .action(async (spec: string, opts: RunCliOptions) => {
      await runVm(spec, opts, io, hooks);
    });
}

function parseTimeout(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || !(n > 0)) {
    throw usageError(`--timeout expects a positive number of seconds, got '${text}'`);
  }
  return n * 1000;
}

function parseRegex(text: string | undefined): RegExp | undefined {
  if (text === undefined) return undefined;
  try {
    return new RegExp(text);
  } catch (err) {
    throw usageError(`--wait-for: invalid regular expression: ${(err as Error).message}`);
  }
}

export async function runVm(
  specPath: string,
  opts: RunCliOptions,
  io: CliIO,
  hooks: RunHooks = {},
): Promise<void> {
  const timeoutMs = parseTimeout(opts.timeout);
  const pattern = parseRegex(opts.waitFor);
  const model = await loadSpec(resolve(io.cwd, specPath), { set: opts.set ?? [] });
  if (opts.serialLog !== undefined) model.serial.log = resolve(io.cwd, opts.serialLog);
  const say = (msg: string): void => void io.stderr.write(`vmforge run: ${msg}\n`);

  if (opts.dryRun) {
    const plan = await planLaunch(model, { ...hooks.launch, dryRun: true });
    if (plan.accelNote) say(plan.accelNote);
    io.stdout.write(`${buildArgv(plan).join('\n')}\n`);
    return;
  }

  const started = Date.now();
  const vm = await Vm.launch(model, { ...hooks.launch, detached: opts.keepRunning ?? false });
  if (vm.plan.accelNote) say(vm.plan.accelNote);
  const elapsed = (): string => `${((Date.now() - started) / 1000).toFixed(1)} s`;
  let detached = false;
  const keepRunning = (): void => {
    vm.detach();
    detached = true;
    const q = vm.plan.qmp;
    say(
      `VM left running: pid ${vm.process.pid}, QMP ${q.kind === 'unix' ? q.path : `tcp:${q.host}:${q.port}`}, serial log ${vm.plan.serialLog}, run directory ${vm.plan.runDir} (remove it when done)`,
    );
  };

  try {
    if (pattern) {
      try {
        const m = await vm.waitForSerial(pattern, timeoutMs === undefined ? {} : { timeoutMs });
        say(`matched ${JSON.stringify(m[0])} on the serial console after ${elapsed()}`);
      } catch (err) {
        if (err instanceof SerialTimeoutError) throw new CliExit(EXIT_TIMEOUT, err.message);
        if (err instanceof SerialEndedError) throw new CliExit(EXIT_GUEST_STOPPED, err.message);
        throw err;
      }
      if (opts.keepRunning) {
        keepRunning();
        return;
      }
      // The guest may be shutting down by itself (the marker is often its last word).
      await vm.stop({ powerdownTimeoutMs: 5000 });
      return;
    }
    if (opts.keepRunning) {
      keepRunning();
      return;
    }
    const exit = await waitWithTimeout(vm, timeoutMs);
    if (exit === undefined) {
      throw new CliExit(
        EXIT_TIMEOUT,
        `timed out after ${timeoutMs! / 1000} s waiting for QEMU to exit; last serial output:\n${await serialTail(vm)}`,
      );
    }
    if (exit.code !== 0) throw new QemuExitError(vm.plan.binary, exit, vm.process.stderrTail());
    say(`QEMU ${describeExit(exit)} after ${elapsed()}`);
  } finally {
    // On failure there is no guest worth waiting for: straight to quit.
    if (!detached) await vm.stop({ powerdownTimeoutMs: 0 });
  }
}

async function waitWithTimeout(vm: Vm, timeoutMs: number | undefined) {
  if (timeoutMs === undefined) return vm.wait();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<undefined>(
    (r) => (timer = setTimeout(() => r(undefined), timeoutMs)),
  );
  const exit = await Promise.race([vm.wait(), timedOut]);
  clearTimeout(timer);
  return exit;
}

async function serialTail(vm: Vm): Promise<string> {
  await vm.serial.poll();
  return vm.serial.tail() || '(nothing)';
}
