// Run the same qemu-img command line through the real qemu-img and through vmforge-img
// (in-process, so hundreds of cases stay fast) and report any difference in stdout, stderr
// (with the tool name swapped) or exit status.
import { spawnSync } from 'node:child_process';
import { img } from './run.js';

export interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

export function qemuImg(args: readonly string[], cwd: string): Outcome {
  const r = spawnSync('qemu-img', args, {
    cwd,
    env: { ...process.env, LC_ALL: 'C' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** qemu-img's stderr as vmforge-img prints it. */
export function asVmforge(stderr: string): string {
  return stderr.replaceAll('qemu-img', 'vmforge-img');
}

/**
 * vmforge-img in-process with `cwd` as the working directory (image paths on the command line
 * are relative to it, as they are for the qemu-img run).
 */
export async function vmforgeImg(args: readonly string[], cwd: string): Promise<Outcome> {
  const previous = process.cwd();
  process.chdir(cwd);
  try {
    return await img([...args], cwd);
  } finally {
    process.chdir(previous);
  }
}

/** '' when both tools agree, else a readable account of the difference. */
export async function differences(args: readonly string[], cwd: string): Promise<string> {
  const q = qemuImg(args, cwd);
  const v = await vmforgeImg(args, cwd);
  const qErr = asVmforge(q.stderr);
  if (q.code === v.code && q.stdout === v.stdout && qErr === v.stderr) return '';
  return (
    `qemu-img ${args.join(' ')}\n  exit ${q.code} vs ${v.code}\n` +
    `  qemu stdout: ${JSON.stringify(q.stdout.slice(0, 800))}\n` +
    `  ours stdout: ${JSON.stringify(v.stdout.slice(0, 800))}\n` +
    `  qemu stderr: ${JSON.stringify(qErr.slice(0, 800))}\n` +
    `  ours stderr: ${JSON.stringify(v.stderr.slice(0, 800))}`
  );
}

/** Run every command line; return the differing ones (empty when all agree). */
export async function allDifferences(
  commands: readonly (readonly string[])[],
  cwd: string,
): Promise<string[]> {
  const out: string[] = [];
  for (const args of commands) {
    const d = await differences(args, cwd);
    if (d) out.push(d);
  }
  return out;
}
