// Host prerequisites of an edk2 build, each with the Debian package that provides it, so a
// missing one is reported as "install X" before anything runs (ArmVirtPkg/PlatformCI/ReadMe.md,
// OvmfPkg/README; the reference's §1.2).

import { access } from 'node:fs/promises';
import { hostQemuArch } from '../constants.js';
import type { Env } from '../paths.js';
import { which } from '../process.js';

export interface Prerequisite {
  /** Program looked up on PATH, or an absolute header path. */
  what: string;
  kind: 'program' | 'header';
  package: string;
  why: string;
}

export interface PrerequisiteStatus extends Prerequisite {
  found: boolean;
  /** Resolved path when found. */
  path?: string;
}

/** Cross-compiler prefix for building `arch` on this host; '' when native. */
export function crossPrefix(arch: string, host: string = hostQemuArch()): string {
  if (arch === host) return '';
  return arch === 'aarch64' ? 'aarch64-linux-gnu-' : arch === 'x86_64' ? 'x86_64-linux-gnu-' : '';
}

const CROSS_PACKAGES: Record<string, string> = {
  'aarch64-linux-gnu-': 'gcc-aarch64-linux-gnu',
  'x86_64-linux-gnu-': 'gcc-x86-64-linux-gnu',
};

/** What an edk2 build of `arch` needs on this host. */
export function buildPrerequisites(
  arch: string,
  options: { host?: string; git?: boolean; crossPrefix?: string } = {},
): Prerequisite[] {
  const list: Prerequisite[] = [
    { what: 'bash', kind: 'program', package: 'bash', why: 'sources edksetup.sh' },
    { what: 'make', kind: 'program', package: 'make', why: 'builds BaseTools' },
    { what: 'gcc', kind: 'program', package: 'gcc', why: 'builds BaseTools' },
    { what: 'g++', kind: 'program', package: 'g++', why: 'builds VfrCompile (BaseTools)' },
    { what: 'python3', kind: 'program', package: 'python3', why: 'runs the build command' },
    { what: 'iasl', kind: 'program', package: 'acpica-tools', why: 'compiles ACPI tables' },
    {
      what: '/usr/include/uuid/uuid.h',
      kind: 'header',
      package: 'uuid-dev',
      why: 'BaseTools (GenFv) links libuuid',
    },
  ];
  if (arch === 'x86_64' || arch === 'i386')
    list.push({ what: 'nasm', kind: 'program', package: 'nasm', why: 'assembles x86 code' });
  const prefix = options.crossPrefix ?? crossPrefix(arch, options.host);
  if (prefix)
    list.push({
      what: `${prefix}gcc`,
      kind: 'program',
      package: CROSS_PACKAGES[prefix] ?? `a ${prefix}gcc cross compiler`,
      why: `cross-compiles ${arch} firmware`,
    });
  if (options.git) list.push({ what: 'git', kind: 'program', package: 'git', why: 'clones --git' });
  return list;
}

/** Look every prerequisite up (PATH from `env`). */
export async function checkPrerequisites(
  list: readonly Prerequisite[],
  env: Env = process.env,
): Promise<PrerequisiteStatus[]> {
  return Promise.all(
    list.map(async (p): Promise<PrerequisiteStatus> => {
      if (p.kind === 'header') {
        try {
          await access(p.what);
          return { ...p, found: true, path: p.what };
        } catch {
          return { ...p, found: false };
        }
      }
      const path = await which(p.what, env);
      return path ? { ...p, found: true, path } : { ...p, found: false };
    }),
  );
}

/** "missing: nasm (apt-get install nasm), ..." — one line naming every package to install. */
export function describeMissing(status: readonly PrerequisiteStatus[]): string | undefined {
  const missing = status.filter((s) => !s.found);
  if (missing.length === 0) return undefined;
  const pkgs = [...new Set(missing.map((m) => m.package))];
  const items = missing.map((m) => `${m.what} (${m.why}; Debian package ${m.package})`);
  return `Missing build prerequisites: ${items.join(', ')}.\nInstall them with: apt-get install ${pkgs.join(' ')}`;
}
