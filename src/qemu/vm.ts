// A running VM: plan → argv → QEMU process (paused) → QMP connected → `cont`. One object owns
// the process, the QMP connection, the serial log, sidecars and the run directory, with the
// shared lifecycle: stop() graceful, destroy() immediate, both idempotent (DESIGN.md).

import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { buildArgs } from './argv/build.js';
import type { VmModel } from './model.js';
import { planLaunch, type LaunchPlan, type PlanOptions } from './plan.js';
import { removeOnParentExit } from './process/cleanup.js';
import { describeExit, QemuExitError, type QemuExit } from './process/errors.js';
import { QemuProcess, type StopOptions, type StopStep } from './process/qemu-process.js';
import { findVirtiofsd, Virtiofsd } from './process/virtiofsd.js';
import { QmpClient } from './qmp/client.js';
import { SerialLog } from './serial.js';

export interface LaunchOptions extends PlanOptions {
  /** Leave the vCPUs stopped after start (no QMP `cont`). */
  paused?: boolean;
  /** Spawn QEMU so that it can outlive this process after detach() (own session, stderr to a file). */
  detached?: boolean;
  /** How long QEMU gets to open its QMP socket. @default 30000 */
  connectTimeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export class Vm {
  readonly plan: LaunchPlan;
  readonly argv: readonly string[];
  readonly process: QemuProcess;
  readonly qmp: QmpClient;
  readonly serial: SerialLog;
  readonly #sidecars: Virtiofsd[];
  readonly #releaseRunDir: () => void;
  #cleaned: Promise<void> | undefined;

  private constructor(
    plan: LaunchPlan,
    proc: QemuProcess,
    qmp: QmpClient,
    sidecars: Virtiofsd[],
    releaseRunDir: () => void,
  ) {
    this.plan = plan;
    this.argv = [plan.binary, ...proc.args];
    this.process = proc;
    this.qmp = qmp;
    this.serial = new SerialLog(plan.serialLog);
    this.#sidecars = sidecars;
    this.#releaseRunDir = releaseRunDir;
  }

  /** Plan, spawn and start a VM. On any failure everything started so far is torn down. */
  static async launch(model: VmModel, options: LaunchOptions = {}): Promise<Vm> {
    const plan = await planLaunch(model, options);
    const release = plan.runDirOwned ? removeOnParentExit(plan.runDir) : () => undefined;
    const sidecars: Virtiofsd[] = [];
    let proc: QemuProcess | undefined;
    let qmp: QmpClient | undefined;
    try {
      for (const [i, share] of model.shares.entries()) {
        if (share.kind !== 'virtiofs') continue;
        const bin = await findVirtiofsd(share.virtiofsd);
        sidecars.push(await Virtiofsd.start(bin, plan.virtiofsSockets[i]!, share.path));
      }
      proc = await QemuProcess.start({
        binary: plan.binary,
        args: buildArgs(plan),
        console: model.serial.console,
        detached: options.detached ?? false,
        stderrFile: join(plan.runDir, 'qemu.stderr'),
        ...(options.env ? { env: options.env } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
      const exitController = new AbortController();
      const p = proc;
      void p.wait().then(() => exitController.abort(new Error('QEMU exited')));
      try {
        qmp = await QmpClient.connect(
          { path: plan.controlSocket },
          {
            connectTimeoutMs: options.connectTimeoutMs ?? 30_000,
            signal: options.signal
              ? AbortSignal.any([options.signal, exitController.signal])
              : exitController.signal,
          },
        );
      } catch (err) {
        if (p.exitStatus || exitController.signal.aborted) {
          const exit = await p.wait();
          throw new QemuExitError(plan.binary, exit, p.stderrTail());
        }
        throw err;
      }
      if (!options.paused && model.incoming === undefined) await qmp.execute('cont');
      return new Vm(plan, proc, qmp, sidecars, release);
    } catch (err) {
      qmp?.destroy();
      await proc?.destroy();
      for (const s of sidecars) await s.stop();
      if (plan.runDirOwned) await rm(plan.runDir, { recursive: true, force: true });
      release();
      throw err;
    }
  }

  /** Resolves with QEMU's exit status once it has exited. */
  wait(): Promise<QemuExit> {
    return this.process.wait();
  }

  /**
   * Wait until `pattern` appears on the serial console. Rejects with SerialTimeoutError after
   * `timeoutMs`, or SerialEndedError if QEMU exits first; both carry the serial tail.
   */
  waitForSerial(
    pattern: RegExp,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<RegExpExecArray> {
    const until = this.process.wait().then((exit) => {
      const err = this.process.stderrTail(5);
      return `QEMU ${describeExit(exit)}${err ? ` (${err.split('\n').join('; ')})` : ''}`;
    });
    return this.serial.waitFor(pattern, { ...options, until });
  }

  /** Graceful stop: system_powerdown → quit → SIGTERM → SIGKILL; then clean up. */
  async stop(options: Omit<StopOptions, 'qmp'> = {}): Promise<{ exit: QemuExit; step: StopStep }> {
    const result = await this.process.stop({ ...options, qmp: this.qmp });
    await this.#cleanup();
    return result;
  }

  /** Kill QEMU at once and clean up. Idempotent. */
  async destroy(): Promise<QemuExit> {
    const exit = await this.process.destroy();
    await this.#cleanup();
    return exit;
  }

  /** After QEMU has exited on its own: release the QMP connection, sidecars and run directory. */
  async close(): Promise<void> {
    if (!this.process.exitStatus) {
      await this.stop();
      return;
    }
    await this.#cleanup();
  }

  /** Let QEMU run on after this process exits; the run directory stays (see plan.runDir). */
  detach(): void {
    this.qmp.destroy();
    this.process.detach();
    this.#releaseRunDir();
    this.#cleaned = Promise.resolve();
  }

  #cleanup(): Promise<void> {
    this.#cleaned ??= (async () => {
      this.qmp.destroy();
      for (const s of this.#sidecars) await s.stop();
      if (this.plan.runDirOwned) await rm(this.plan.runDir, { recursive: true, force: true });
      this.#releaseRunDir();
    })();
    return this.#cleaned;
  }
}
