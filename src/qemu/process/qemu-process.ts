// One QEMU child process: spawned from an argv array (never a shell string), its stderr tail
// kept for error messages, stopped gracefully (system_powerdown → quit → SIGTERM → SIGKILL) or
// destroyed at once, killed if the parent exits (style.md §10.8, execa lib/terminate/*).

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { AbortError, debug } from '../../core/index.js';
import type { QmpClient } from '../qmp/client.js';
import { onParentExit } from './cleanup.js';
import { EMULATOR_PACKAGES, QemuStartError, type QemuExit } from './errors.js';

const log = debug('qemu');
const STDERR_TAIL = 64 * 1024;

export interface QemuSpawnOptions {
  binary: string;
  args: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Connect QEMU's stdin/stdout to ours (serial console on stdio). */
  console?: boolean;
  /** May keep running after we exit (once detach() is called): own session, stderr to `stderrFile`. */
  detached?: boolean;
  /** With `detached`: where QEMU's stderr goes. */
  stderrFile?: string;
  /** Aborting destroys the process. */
  signal?: AbortSignal;
}

export interface StopOptions {
  /** Used for system_powerdown and quit; without it stop() starts at SIGTERM. */
  qmp?: QmpClient | undefined;
  /** How long the guest gets to power off after system_powerdown (0 = skip it). @default 10000 */
  powerdownTimeoutMs?: number;
  /** @default 5000 */
  quitTimeoutMs?: number;
  /** @default 5000 */
  termTimeoutMs?: number;
}

export type StopStep = 'exited' | 'powerdown' | 'quit' | 'SIGTERM' | 'SIGKILL';

export class QemuProcess {
  readonly binary: string;
  readonly args: readonly string[];
  readonly #child: ChildProcess;
  readonly #exited: Promise<QemuExit>;
  #exit: QemuExit | undefined;
  #stderr = '';
  #stderrFile: string | undefined;
  #unregister: () => void = () => undefined;
  #detachedForGood = false;

  private constructor(binary: string, args: string[], child: ChildProcess) {
    this.binary = binary;
    this.args = args;
    this.#child = child;
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => {
      this.#stderr = (this.#stderr + s).slice(-STDERR_TAIL);
      log('stderr', s.trimEnd());
    });
    this.#exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.#exit = { code, signal };
        this.#unregister();
        log(`pid ${child.pid} ended`, JSON.stringify(this.#exit));
        resolve(this.#exit);
      });
    });
  }

  /** Spawn QEMU; resolves once the process exists, rejects if it cannot be started. */
  static async start(options: QemuSpawnOptions): Promise<QemuProcess> {
    const { binary, args } = options;
    if (options.signal?.aborted)
      throw new AbortError('QEMU start aborted', { cause: options.signal.reason });
    let stderrFd: number | undefined;
    if (options.detached && options.stderrFile) stderrFd = openSync(options.stderrFile, 'a');
    const stdio: ('ignore' | 'pipe' | 'inherit' | number)[] = options.detached
      ? ['ignore', 'ignore', stderrFd ?? 'ignore']
      : options.console
        ? ['inherit', 'inherit', 'pipe']
        : ['ignore', 'ignore', 'pipe'];
    log('spawn', binary, args.join(' '));
    const child = spawn(binary, args, {
      stdio,
      detached: options.detached ?? false,
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      ...(options.env === undefined ? {} : { env: options.env }),
    });
    if (stderrFd !== undefined) closeSync(stderrFd);
    const proc = new QemuProcess(binary, args, child);
    if (stderrFd !== undefined) proc.#stderrFile = options.stderrFile;
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err: NodeJS.ErrnoException) => {
        const name = basename(binary);
        const pkg = EMULATOR_PACKAGES[name];
        const hint =
          err.code === 'ENOENT'
            ? ` (not found${pkg ? `; install the Debian package ${pkg}` : ''})`
            : '';
        reject(
          new QemuStartError(`Could not start ${binary}: ${err.message}${hint}`, {
            cause: err,
            ...(err.code ? { errno: err.code } : {}),
          }),
        );
      });
    });
    // Even a detached QEMU dies with us until detach() is called (e.g. Ctrl-C before
    // --keep-running's marker matched).
    proc.#unregister = onParentExit(() => {
      if (proc.#exit === undefined) child.kill('SIGKILL');
    });
    if (options.detached) child.unref();
    options.signal?.addEventListener('abort', () => void proc.destroy(), { once: true });
    return proc;
  }

  get pid(): number {
    return this.#child.pid ?? -1;
  }

  /** The exit status once QEMU ended, else undefined. */
  get exitStatus(): QemuExit | undefined {
    return this.#exit;
  }

  /** The last 64 KiB QEMU wrote to stderr. */
  stderrTail(lines = 20): string {
    if (this.#stderrFile) {
      try {
        this.#stderr = readFileSync(this.#stderrFile, 'utf8').slice(-STDERR_TAIL);
      } catch {
        // not written yet
      }
    }
    return this.#stderr
      .split('\n')
      .slice(-lines - 1)
      .join('\n')
      .trimEnd();
  }

  /** Resolves when QEMU has exited (never rejects). */
  wait(): Promise<QemuExit> {
    return this.#exited;
  }

  /** Wait up to `ms` for exit; true if it exited. */
  async #waitFor(ms: number): Promise<boolean> {
    if (this.#exit) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    const done = await Promise.race([this.#exited.then(() => true), timeout]);
    clearTimeout(timer);
    return done;
  }

  /**
   * Graceful stop: ask the guest to power off (system_powerdown), then QEMU to quit, then
   * SIGTERM, then SIGKILL, each after its timeout. Resolves with the step that ended it.
   */
  async stop(options: StopOptions = {}): Promise<{ exit: QemuExit; step: StopStep }> {
    const {
      qmp,
      powerdownTimeoutMs = 10_000,
      quitTimeoutMs = 5000,
      termTimeoutMs = 5000,
    } = options;
    if (this.#exit) return { exit: this.#exit, step: 'exited' };
    this.#holdLoop();
    if (qmp && !qmp.closed && powerdownTimeoutMs > 0) {
      await qmp.execute('system_powerdown', undefined, { timeoutMs: 5000 }).catch(() => undefined);
      if (await this.#waitFor(powerdownTimeoutMs)) return { exit: this.#exit!, step: 'powerdown' };
    }
    if (qmp && !qmp.closed) {
      await qmp.execute('quit', undefined, { timeoutMs: quitTimeoutMs }).catch(() => undefined);
      if (await this.#waitFor(quitTimeoutMs)) return { exit: this.#exit!, step: 'quit' };
    }
    this.#child.kill('SIGTERM');
    if (await this.#waitFor(termTimeoutMs)) return { exit: this.#exit!, step: 'SIGTERM' };
    this.#child.kill('SIGKILL');
    return { exit: await this.#exited, step: 'SIGKILL' };
  }

  /** Kill at once (SIGKILL) and wait for the exit. Idempotent. */
  async destroy(): Promise<QemuExit> {
    this.#holdLoop();
    if (!this.#exit) this.#child.kill('SIGKILL');
    return this.#exited;
  }

  /**
   * A child started detached (unref'd, for --keep-running) that is being stopped after all
   * must keep the event loop alive until its exit is seen, or Node may drain the loop and end
   * while stop() is still waiting for it.
   */
  #holdLoop(): void {
    if (!this.#detachedForGood) this.#child.ref();
  }

  /** Forget the child: it keeps running after this process exits (for --keep-running). */
  detach(): void {
    this.#detachedForGood = true;
    this.#unregister();
    this.#child.unref();
    this.#child.stderr?.destroy();
  }
}
