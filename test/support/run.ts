// Run vmforge commands in-process and real tools as subprocesses, capturing output and exit code.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { captureIO } from '../../src/cli/io.js';
import { runImg, runVmforge } from '../../src/cli/main.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `vmforge-img ARGS` in-process. */
export async function img(args: string[], cwd?: string): Promise<RunResult> {
  const cap = captureIO({}, cwd);
  const code = await runImg(args, cap.io);
  return { code, stdout: cap.out, stderr: cap.err };
}

/** `vmforge ARGS` in-process. */
export async function vmforge(args: string[], cwd?: string): Promise<RunResult> {
  const cap = captureIO({}, cwd);
  const code = await runVmforge(args, cap.io);
  return { code, stdout: cap.out, stderr: cap.err };
}

/** Spawn a program (never through a shell) and collect its output; never rejects on exit code. */
export function run(
  file: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        cwd: options.cwd,
        env: options.env ?? { ...process.env, LC_ALL: 'C', TZ: process.env['TZ'] ?? 'UTC' },
        timeout: options.timeoutMs ?? 120_000,
        maxBuffer: 256 * 1024 * 1024,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          if ((err as { killed?: boolean }).killed) {
            reject(new Error(`${file} ${args.join(' ')} timed out`));
            return;
          }
          if (err.code !== undefined && typeof err.code === 'string') {
            reject(err);
            return;
          }
        }
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** Absolute path of a bin shim (e.g. 'vmforge-img'), to spawn the built CLI with the current node. */
export function binPath(name: 'vmforge' | 'vmforge-img' | 'vmforge-nbd'): string {
  return fileURLToPath(new URL(`../../bin/${name}.js`, import.meta.url));
}

/** Spawn a vmforge bin under the node running the tests (Node 24), so `dist/` must be built. */
export function runBin(
  name: 'vmforge' | 'vmforge-img' | 'vmforge-nbd',
  args: string[],
  options: Parameters<typeof run>[2] = {},
): Promise<RunResult> {
  return run(process.execPath, [binPath(name), ...args], options);
}
