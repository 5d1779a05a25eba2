// Machine aliases. Descriptors list concrete machine types as globs ("virt-*", "pc-q35-*") and
// firmware.json says aliases are not to be matched against them, so `virt` and `q35` are first
// resolved to what they stand for (virt-7.2, pc-q35-7.2) by asking the emulator, as libvirt does.

import { InvalidArgumentError } from '../core/index.js';
import { isGlob } from './glob.js';
import type { Env } from './paths.js';
import { capture, which } from './process.js';
import { QEMU_SYSTEM_PACKAGES } from './constants.js';

export interface MachineType {
  name: string;
  /** Set on alias lines: `virt  QEMU 7.2 ARM Virtual Machine (alias of virt-7.2)`. */
  aliasOf?: string;
  isDefault: boolean;
}

/** Parse `qemu-system-<arch> -machine help`. */
export function parseMachineHelp(text: string): MachineType[] {
  const out: MachineType[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\S+)\s+(.*)$/.exec(line.trimEnd());
    if (!m || line.startsWith('Supported machines')) continue;
    const alias = /\(alias of ([^)\s]+)\)/.exec(m[2]!);
    out.push({
      name: m[1]!,
      ...(alias ? { aliasOf: alias[1]! } : {}),
      isDefault: /\(default\)/.test(m[2]!),
    });
  }
  return out;
}

/** Lists the machine types an emulator knows; undefined when the emulator is not installed. */
export type MachineLister = (arch: string) => Promise<MachineType[] | undefined>;

/** The default lister: runs `qemu-system-<arch> -machine help` (10 s timeout). */
export function qemuMachineLister(env: Env = process.env, signal?: AbortSignal): MachineLister {
  return async (arch) => {
    const bin = await which(`qemu-system-${arch}`, env);
    if (!bin) return undefined;
    const r = await capture(bin, ['-machine', 'help'], {
      env,
      timeoutMs: 10_000,
      ...(signal ? { signal } : {}),
    });
    if (r.code !== 0) return undefined;
    return parseMachineHelp(r.stdout);
  };
}

/**
 * When the emulator is absent, the common aliases still have to mean something: they are the
 * newest member of their family, which we stand in for with a version no real QEMU has yet, so
 * a glob like "virt-*" matches and "virt-2.*" does not.
 */
const FALLBACK_FAMILIES: Record<string, Record<string, string>> = {
  aarch64: { virt: 'virt-' },
  arm: { virt: 'virt-' },
  x86_64: { q35: 'pc-q35-', pc: 'pc-i440fx-' },
  i386: { q35: 'pc-q35-', pc: 'pc-i440fx-' },
};
const FALLBACK_VERSION = '999.0';

/** The machine a firmware user means when none is given: virt on ARM, q35 on x86. */
export const DEFAULT_MACHINE: Partial<Record<string, string>> = {
  aarch64: 'virt',
  arm: 'virt',
  x86_64: 'q35',
  i386: 'q35',
  riscv64: 'virt',
  loongarch64: 'virt',
};

export interface ResolvedMachine {
  requested: string;
  /** Concrete machine type that descriptors' globs are matched against. */
  concrete: string;
  /** How it was resolved. */
  via: 'qemu' | 'fallback' | 'as-is';
}

export async function resolveMachine(
  arch: string,
  machine: string | undefined,
  lister: MachineLister,
): Promise<ResolvedMachine> {
  const requested = machine ?? DEFAULT_MACHINE[arch];
  if (requested === undefined)
    throw new InvalidArgumentError(`No default machine type for ${arch}; pass --machine`);
  if (isGlob(requested))
    throw new InvalidArgumentError(
      `Machine type '${requested}' is a pattern; give a machine type such as 'virt' or 'pc-q35-7.2'`,
    );
  const known = await lister(arch);
  if (known) {
    const hit = known.find((m) => m.name === requested);
    if (!hit) {
      const pkg = QEMU_SYSTEM_PACKAGES[arch];
      throw new InvalidArgumentError(
        `qemu-system-${arch} has no machine type '${requested}' (see 'qemu-system-${arch} -machine help')`,
        { details: { arch, machine: requested, ...(pkg ? { package: pkg } : {}) } },
      );
    }
    return { requested, concrete: hit.aliasOf ?? hit.name, via: 'qemu' };
  }
  const family = FALLBACK_FAMILIES[arch]?.[requested];
  if (family) return { requested, concrete: family + FALLBACK_VERSION, via: 'fallback' };
  return { requested, concrete: requested, via: 'as-is' };
}
