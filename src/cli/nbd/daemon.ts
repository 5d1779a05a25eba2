// Process-level pieces of the daemon: systemd socket activation (sd_listen_fds), --pid-file and
// --fork. Node cannot fork(), so --fork re-executes vmforge as a detached child whose stderr is
// a pipe back to the parent until the server is listening; the parent relays what it prints and
// exits then, with qemu-nbd's status rule (1 if the child printed anything, else 0).

import { spawn } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { packageFile } from '../package-root.js';
import { EnvironmentError, strerror, systemErrorCode } from '../../core/index.js';
import type { CliIO, OutputStream } from '../io.js';

/** First inherited descriptor under socket activation (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

/**
 * Number of sockets passed by systemd (or libnbd's nbd_connect_systemd_socket_activation):
 * LISTEN_PID must name this process and LISTEN_FDS count the fds from 3 (util/systemd.c).
 */
export function socketActivationFds(env: CliIO['env'], pid = process.pid): number {
  const listenPid = env['LISTEN_PID'];
  const listenFds = env['LISTEN_FDS'];
  if (!listenPid || !listenFds) return 0;
  if (!/^\d+$/.test(listenPid) || Number(listenPid) !== pid) return 0;
  if (!/^\d+$/.test(listenFds)) return 0;
  return Number(listenFds);
}

/** Write "PID\n" (qemu_write_pidfile). */
export async function writePidFile(path: string): Promise<void> {
  let fh;
  try {
    fh = await open(path, 'w', 0o600);
  } catch (err) {
    throw new EnvironmentError(`Cannot open pid file: ${strerror(systemErrorCode(err))}`, {
      cause: err,
    });
  }
  try {
    await fh.writeFile(`${process.pid}\n`);
  } catch (err) {
    throw new EnvironmentError(`Failed to write pid file: ${strerror(systemErrorCode(err))}`, {
      cause: err,
    });
  } finally {
    await fh.close();
  }
}

export async function removePidFile(path: string): Promise<void> {
  await unlink(path).catch(() => undefined);
}

/** Environment variable telling a forked child which fd carries its startup stderr. */
export const STARTUP_FD_ENV = 'VMFORGE_NBD_STARTUP_FD';

/**
 * In a forked child: a stderr that writes to the startup pipe until `ready()`, then to nowhere
 * (qemu-nbd's daemon has /dev/null as stderr once running).
 */
export function childStartupStderr(
  env: CliIO['env'],
): { stderr: OutputStream; ready: () => void } | undefined {
  const fdText = env[STARTUP_FD_ENV];
  if (!fdText || !/^\d+$/.test(fdText)) return undefined;
  let fd: number | undefined = Number(fdText);
  return {
    stderr: {
      write: (chunk: string | Uint8Array) => {
        if (fd !== undefined) {
          try {
            if (typeof chunk === 'string') writeSync(fd, chunk);
            else writeSync(fd, chunk);
          } catch {
            fd = undefined; // parent gone
          }
        }
        return true;
      },
    },
    ready: () => {
      if (fd !== undefined) {
        try {
          closeSync(fd);
        } catch {
          /* already closed */
        }
        fd = undefined;
      }
    },
  };
}

/** Parent side of --fork: start the daemon child and relay its startup messages. */
export function forkDaemon(childArgv: readonly string[], io: CliIO): Promise<number> {
  const bin = packageFile('bin', 'vmforge.js');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, 'nbd', ...childArgv], {
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
      env: { ...io.env, [STARTUP_FD_ENV]: '3' },
      cwd: io.cwd,
    });
    let printed = false;
    const pipe = child.stdio[3] as NodeJS.ReadableStream | null;
    child.once('error', (err) => {
      io.stderr.write(`vmforge-nbd: Failed to fork: ${err.message}\n`);
      resolve(1);
    });
    if (!pipe) {
      resolve(1);
      return;
    }
    pipe.on('data', (chunk: Buffer) => {
      printed = true;
      io.stderr.write(chunk);
    });
    pipe.on('error', () => undefined);
    pipe.on('close', () => {
      // The child closes the pipe when it is serving, or dies. Give a dying child a moment to
      // be reaped so a silent crash is not reported as success.
      setTimeout(() => {
        child.unref();
        // qemu-nbd: "Usually the daemon should not print any message. Exit with zero status in
        // that case."
        resolve(printed || child.exitCode !== null || child.signalCode !== null ? 1 : 0);
      }, 100);
    });
  });
}
