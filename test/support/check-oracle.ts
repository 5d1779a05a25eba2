// Running `qemu-img check` and vmforge's checkImage() on copies of the same image and
// comparing what they say: the JSON result, the stderr lines in order, the exit code; and,
// after a repair, what `qemu-img check` and `qemu-img compare` say about both repaired copies.

import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { expect } from 'vitest';
import { isVmforgeError } from '../../src/core/index.js';
import { checkImage } from '../../src/img/check.js';
import { run } from './run.js';

export type Repair = undefined | 'leaks' | 'all';

export interface CheckRun {
  exitCode: number;
  /** Parsed --output=json, with `filename` reduced to the base name; undefined when none. */
  json: Record<string, unknown> | undefined;
  /** stderr lines as qemu-img prints them, directory prefixes removed. */
  stderr: string[];
}

const lines = (s: string): string[] => (s === '' ? [] : s.replace(/\n$/, '').split('\n'));

function withoutDir(text: string, dir: string): string {
  return text.split(`${dir}/`).join('');
}

/** `qemu-img check [-r X] --output=json FILE` run inside the image's directory. */
export async function qemuCheck(
  path: string,
  repair: Repair,
  timeoutMs = 60_000,
): Promise<CheckRun> {
  const dir = dirname(path);
  const args = ['check', ...(repair ? ['-r', repair] : []), '--output=json', basename(path)];
  const r = await run('qemu-img', args, { cwd: dir, timeoutMs });
  return {
    exitCode: r.code,
    json: r.stdout.trim() ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined,
    stderr: lines(withoutDir(r.stderr, dir)),
  };
}

/** vmforge's checkImage(), rendered the way qemu-img renders the same outcome. */
export async function vmforgeCheck(path: string, repair: Repair): Promise<CheckRun> {
  const dir = dirname(path);
  const prog = 'qemu-img';
  const stderr: string[] = [];
  try {
    const out = await checkImage(path, { repair });
    for (const m of out.messages)
      stderr.push(...lines(`${m.report ? `${prog}: ` : ''}${m.text}\n`));
    if (out.error) stderr.push(`${prog}: ${out.error}`);
    const json = out.result ? { ...out.result, filename: basename(path) } : undefined;
    return {
      exitCode: out.exitCode,
      json: json as Record<string, unknown> | undefined,
      stderr: stderr.map((l) => withoutDir(l, dir)),
    };
  } catch (err) {
    if (!isVmforgeError(err)) throw err;
    stderr.push(...lines(`${prog}: ${err.message}\n`));
    return { exitCode: 1, json: undefined, stderr: stderr.map((l) => withoutDir(l, dir)) };
  }
}

/** Copy an image's whole directory (backing and data files included), keeping holes. */
export async function copyDir(from: string, to: string): Promise<void> {
  const r = await run('cp', ['-a', '--sparse=always', from, to]);
  if (r.code !== 0) throw new Error(`cp failed: ${r.stderr}`);
}

/** `qemu-img compare` of the guest contents of two images (exit code and output). */
export async function qemuCompare(a: string, b: string): Promise<{ code: number; out: string }> {
  const r = await run('qemu-img', ['compare', a, b], { timeoutMs: 60_000 });
  return {
    code: r.code,
    out: (r.stdout + r.stderr)
      .split(`${dirname(a)}/`)
      .join('')
      .split(`${dirname(b)}/`)
      .join(''),
  };
}

export async function sameBytes(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([readFile(a), readFile(b)]);
  return x.equals(y);
}

export interface Comparison {
  qemu: CheckRun;
  vmforge: CheckRun;
}

/**
 * Check copies `q` and `v` of one image with qemu-img and vmforge in the same mode and assert
 * they agree; with a repair, also assert that qemu-img sees both repaired copies alike and that
 * their guest contents match.
 */
export async function expectSameCheck(
  q: string,
  v: string,
  repair: Repair,
  label: string,
  options: { ignoreAfterRepair?: string[] } = {},
): Promise<Comparison> {
  const qemu = await qemuCheck(q, repair);
  const vmforge = await vmforgeCheck(v, repair);
  expect(vmforge.stderr, `${label}: stderr`).toEqual(qemu.stderr);
  expect(vmforge.json, `${label}: JSON`).toEqual(qemu.json);
  expect(vmforge.exitCode, `${label}: exit code`).toBe(qemu.exitCode);
  if (repair) {
    // After the repair, qemu-img must judge both copies the same way...
    const qAfter = await qemuCheck(q, undefined);
    const vAfter = await qemuCheck(v, undefined);
    for (const key of options.ignoreAfterRepair ?? []) {
      delete qAfter.json?.[key];
      delete vAfter.json?.[key];
    }
    expect(vAfter, `${label}: qemu-img check after repair`).toEqual(qAfter);
    // ...and, where it can read them, find the same guest data in both.
    const cmp = await qemuCompare(q, v);
    if (cmp.code === 0 || cmp.code === 1) {
      expect(cmp.code, `${label}: qemu-img compare of the repaired copies`).toBe(0);
      expect(cmp.out).toContain('Images are identical.');
    }
  }
  return { qemu, vmforge };
}

export { join };
