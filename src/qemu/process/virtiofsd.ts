// virtiofsd sidecars for virtio-fs shares: one daemon per share, listening on the vhost-user
// socket QEMU connects to (docs/system/devices/virtio-fs.rst). Both the C daemon QEMU ≤ 7.2
// ships (/usr/lib/qemu/virtiofsd) and the Rust one accept --socket-path and -o source=.

import { spawn, type ChildProcess } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { EnvironmentError } from '../../core/index.js';
import { onParentExit } from './cleanup.js';

const CANDIDATES = [
  '/usr/libexec/virtiofsd',
  '/usr/lib/qemu/virtiofsd',
  '/usr/libexec/qemu/virtiofsd',
];

export async function findVirtiofsd(explicit?: string): Promise<string> {
  if (explicit) return explicit;
  for (const c of CANDIDATES) {
    if (
      await stat(c).then(
        () => true,
        () => false,
      )
    )
      return c;
  }
  throw new EnvironmentError(
    'virtio-fs shares need virtiofsd, which was not found (Debian: qemu-system-common ships /usr/lib/qemu/virtiofsd; newer releases the virtiofsd package); use a 9p share instead',
    { code: 'VMF_VIRTIOFSD_MISSING' },
  );
}

export class Virtiofsd {
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  readonly #unregister: () => void;
  #stderr = '';

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.stderr
      ?.setEncoding('utf8')
      .on('data', (s: string) => (this.#stderr = (this.#stderr + s).slice(-8192)));
    this.#exited = new Promise((resolve) => child.once('close', () => resolve()));
    this.#unregister = onParentExit(() => child.kill('SIGKILL'));
    void this.#exited.then(() => this.#unregister());
  }

  /** Start virtiofsd for `dir` and wait until its socket exists. */
  static async start(binary: string, socket: string, dir: string): Promise<Virtiofsd> {
    const child = spawn(
      binary,
      [`--socket-path=${socket}`, '-o', `source=${dir}`, '-o', 'cache=auto'],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const d = new Virtiofsd(child);
    let spawnError: Error | undefined;
    child.once('error', (e) => (spawnError = e));
    for (let i = 0; i < 100; i++) {
      if (spawnError)
        throw new EnvironmentError(`Could not start ${binary}: ${spawnError.message}`, {
          cause: spawnError,
        });
      if (child.exitCode !== null) {
        throw new EnvironmentError(
          `${binary} exited with status ${child.exitCode}: ${d.#stderr.trim()}`,
          { code: 'VMF_VIRTIOFSD' },
        );
      }
      if (
        await stat(socket).then(
          () => true,
          () => false,
        )
      )
        return d;
      await delay(50);
    }
    await d.stop();
    throw new EnvironmentError(`${binary} did not create ${socket} within 5 s`, {
      code: 'VMF_VIRTIOFSD',
    });
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null)
      this.#child.kill('SIGTERM');
    const t = setTimeout(() => this.#child.kill('SIGKILL'), 3000);
    await this.#exited;
    clearTimeout(t);
  }
}
