// Runs build steps: each in its own process group (so cancelling stops make's children too),
// output appended to one log file, lines fed to a callback for progress, and on failure an
// error carrying the log's tail.

import { spawn } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { AbortError, EnvironmentError } from '../../core/index.js';
import type { Env } from '../paths.js';
import type { BuildStep } from './plan.js';

export interface RunStepOptions {
  env: Env;
  log: WriteStream;
  logPath: string;
  onLine?: (line: string) => void;
  signal?: AbortSignal;
}

/** Last `n` lines of a file (the log), for error messages. */
export async function tail(path: string, n: number): Promise<string> {
  try {
    const text = await readFile(path, 'utf8');
    return text.trimEnd().split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}

export function openLog(path: string): WriteStream {
  return createWriteStream(path, { flags: 'a' });
}

export async function runStep(step: BuildStep, o: RunStepOptions): Promise<void> {
  o.signal?.throwIfAborted();
  o.log.write(`\n### vmforge: ${step.description}\n### $ ${[step.file, ...step.args].join(' ')}\n`);
  await new Promise<void>((resolve, reject) => {
    const child = spawn(step.file, step.args, {
      cwd: step.cwd,
      env: o.env as NodeJS.ProcessEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let partial = '';
    const onData = (b: Buffer) => {
      o.log.write(b);
      if (!o.onLine) return;
      const text = partial + b.toString('utf8');
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) o.onLine(l);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      const pid = child.pid;
      if (pid === undefined) return;
      try {
        process.kill(-pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
      killTimer = setTimeout(() => {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }, 5000);
      killTimer.unref();
    };
    o.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (err) => {
      o.signal?.removeEventListener('abort', onAbort);
      reject(
        new EnvironmentError(`Could not run ${step.file}: ${err.message}`, {
          cause: err,
          code: 'VMF_FW_BUILD_FAILED',
        }),
      );
    });
    child.on('close', (code, signal) => {
      o.signal?.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      if (o.signal?.aborted)
        return reject(new AbortError(`Build cancelled during: ${step.description}`));
      if (code === 0) return resolve();
      const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
      // Let the log stream flush before reading its tail.
      o.log.write('', () => {
        void tail(o.logPath, 25).then((t) =>
          reject(
            new EnvironmentError(
              `${step.description} failed: ${step.file} ${how}. Log: ${o.logPath}${t ? `\n${t}` : ''}`,
              { code: 'VMF_FW_BUILD_FAILED', details: { step: step.name, logPath: o.logPath } },
            ),
          ),
        );
      });
    });
  });
}
