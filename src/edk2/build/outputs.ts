// Finding what a build produced: Build/<OUTPUT_DIRECTORY>/<TARGET>_<TAG>/FV/<file>. The output
// directory's spelling moved (ArmVirtQemu-AARCH64 before the 2025 ARM32 removal, -AArch64
// after), so every Build/* directory is looked at and the expected names are preferred.

import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EnvironmentError } from '../../core/index.js';
import type { BuildTarget, Platform } from './plan.js';

export interface BuildOutputs {
  fvDir: string;
  code: string;
  /** Absent when the platform has no separate vars image. */
  vars?: string;
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

export async function findBuildOutputs(
  root: string,
  platform: Platform,
  target: BuildTarget,
  toolchain: string,
): Promise<BuildOutputs> {
  const buildDir = join(root, 'Build');
  let dirs: string[];
  try {
    dirs = await readdir(buildDir);
  } catch {
    dirs = [];
  }
  // Expected names first, then anything else (a tree with a renamed OUTPUT_DIRECTORY).
  const ordered = [
    ...platform.outputDirs.filter((d) => dirs.includes(d)),
    ...dirs.filter((d) => !platform.outputDirs.includes(d)).sort(),
  ];
  const candidates: { fvDir: string; mtime: number; expected: boolean }[] = [];
  for (const d of ordered) {
    const fvDir = join(buildDir, d, `${target}_${toolchain}`, 'FV');
    const code = join(fvDir, platform.code);
    if (await isFile(code))
      candidates.push({
        fvDir,
        mtime: (await stat(code)).mtimeMs,
        expected: platform.outputDirs.includes(d),
      });
  }
  const best =
    candidates.find((c) => c.expected) ?? candidates.sort((a, b) => b.mtime - a.mtime)[0];
  if (!best)
    throw new EnvironmentError(
      `The build produced no ${platform.code}: looked for Build/*/${target}_${toolchain}/FV/${platform.code} in ${root}`,
      { code: 'VMF_FW_BUILD_OUTPUT' },
    );
  const vars = join(best.fvDir, platform.vars);
  return {
    fvDir: best.fvDir,
    code: join(best.fvDir, platform.code),
    ...((await isFile(vars)) ? { vars } : {}),
  };
}
