// Small child-process helpers shared by machine probing and the edk2 build: argv arrays only
// (never a shell string built from user input), AbortSignal, a timeout, and PATH lookup.

import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';
import type { Env } from './paths.js';

/** Absolute path of `tool` on PATH, or undefined. */
export async function which(tool: string, env: Env = process.env): Promise<string | undefined> {
  if (isAbsolute(tool)) return (await isExecutable(tool)) ? tool : undefined;
  for (const dir of (env['PATH'] ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, tool);
    if (await isExecutable(p)) return p;
  }
  return undefined;
}

async function isExecutable(p: string): Promise<boolean> {
  try {
    await access(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export interface CaptureResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run a program to completion and capture its output (bounded), killing it on timeout/abort. */
export function capture(
  file: string,
  args: readonly string[],
  options: { env?: Env; cwd?: string; timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<CaptureResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: options.env as NodeJS.ProcessEnv | undefined,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: options.timeoutMs ?? 30_000,
      signal: options.signal,
      killSignal: 'SIGKILL',
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const LIMIT = 4 * 1024 * 1024;
    let outLen = 0;
    let errLen = 0;
    child.stdout.on('data', (b: Buffer) => {
      if ((outLen += b.length) <= LIMIT) out.push(b);
    });
    child.stderr.on('data', (b: Buffer) => {
      if ((errLen += b.length) <= LIMIT) err.push(b);
    });
    child.on('error', reject);
    child.on('close', (code, signal) =>
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      }),
    );
  });
}
