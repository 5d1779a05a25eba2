// findFirmware: the first descriptor, in precedence order, that fits the architecture, the
// (alias-resolved) machine type, the interface, the flash mode and the requested features —
// libvirt's qemuFirmwareMatchDomain rules: secure-boot / enrolled-keys are tri-state (wanted,
// refused, don't care), unknown features are ignored, the first match wins.

import { access } from 'node:fs/promises';
import { EnvironmentError, InvalidArgumentError } from '../core/index.js';
import { FIRMWARE_PACKAGES, hostQemuArch } from './constants.js';
import {
  executableOf,
  nvramTemplateOf,
  type FirmwareDescriptor,
  type FirmwareInterface,
  type FlashMode,
} from './descriptor.js';
import { globMatch } from './glob.js';
import { listFirmware, type ListFirmwareOptions } from './list.js';
import {
  qemuMachineLister,
  resolveMachine,
  type MachineLister,
  type ResolvedMachine,
} from './machine.js';

export interface FindFirmwareOptions extends ListFirmwareOptions {
  /** QEMU target (SysEmuTarget): aarch64, x86_64, ... @default the host's */
  arch?: string;
  /** Machine type or alias (virt, q35, pc-q35-7.2). @default virt on ARM, q35 on x86 */
  machine?: string;
  /** @default 'uefi' */
  interface?: FirmwareInterface;
  /** true: must have secure-boot; false: must not; undefined: either. */
  secureBoot?: boolean;
  /** true: vars template has keys enrolled (implies secureBoot); false: must not. */
  enrolledKeys?: boolean;
  /** Further features that must be present (e.g. requires-smm, amd-sev). */
  features?: readonly string[];
  /** Features that must be absent. */
  withoutFeatures?: readonly string[];
  /** @default 'flash' */
  device?: 'flash' | 'memory' | 'kernel';
  /** Flash mode wanted; `any` accepts all three. @default 'split' (a code + vars-template pair) */
  mode?: FlashMode | 'any';
  /** Only descriptors whose executable has this block format (raw, qcow2). */
  format?: string;
  /** Skip descriptors whose files are missing (stale descriptors). @default true */
  checkFiles?: boolean;
  /** How machine aliases are resolved. @default runs qemu-system-<arch> -machine help */
  machineLister?: MachineLister;
}

export interface FirmwareFile {
  path: string;
  format: string;
}

export interface FirmwareMatch {
  name: string;
  descriptorPath: string;
  descriptor: FirmwareDescriptor;
  arch: string;
  machine: ResolvedMachine;
  device: 'flash' | 'memory' | 'kernel';
  mode?: FlashMode;
  code: FirmwareFile;
  varsTemplate?: FirmwareFile;
  features: string[];
}

export interface Rejection {
  name: string;
  path: string;
  reason: string;
}

interface Wanted {
  require: Set<string>;
  refuse: Set<string>;
}

function normalizeFeatures(o: FindFirmwareOptions): Wanted {
  const require = new Set(o.features ?? []);
  const refuse = new Set(o.withoutFeatures ?? []);
  let sb = o.secureBoot;
  if (o.enrolledKeys === true) {
    if (sb === false)
      throw new InvalidArgumentError('Enrolled keys need Secure Boot; drop --no-secure-boot');
    sb = true;
  }
  if (sb === true) require.add('secure-boot');
  if (sb === false) {
    refuse.add('secure-boot');
    refuse.add('enrolled-keys');
  }
  if (o.enrolledKeys === true) require.add('enrolled-keys');
  if (o.enrolledKeys === false) refuse.add('enrolled-keys');
  for (const f of require)
    if (refuse.has(f))
      throw new InvalidArgumentError(`Feature '${f}' is both required and refused`);
  return { require, refuse };
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** Why `d` does not fit, or undefined when it does. */
async function mismatch(
  d: FirmwareDescriptor,
  arch: string,
  machine: string,
  o: FindFirmwareOptions,
  wanted: Wanted,
): Promise<string | undefined> {
  const iface = o.interface ?? 'uefi';
  if (!d['interface-types'].includes(iface)) return `interface is not ${iface}`;
  const targets = d.targets.filter((t) => t.architecture === arch);
  if (targets.length === 0)
    return `for ${d.targets.map((t) => t.architecture).join(', ') || 'no architecture'}`;
  if (!targets.some((t) => t.machines.some((g) => globMatch(g, machine))))
    return `machines ${targets.flatMap((t) => t.machines).join(', ')} do not include ${machine}`;
  const device = o.device ?? 'flash';
  if (d.mapping.device !== device) return `mapped as ${d.mapping.device}, not ${device}`;
  const mode = o.mode ?? 'split';
  if (d.mapping.device === 'flash' && mode !== 'any' && d.mapping.mode !== mode)
    return `flash mode ${d.mapping.mode}, not ${mode}`;
  const missing = [...wanted.require].filter((f) => !d.features.includes(f));
  if (missing.length) return `lacks ${missing.join(', ')}`;
  const unwanted = [...wanted.refuse].filter((f) => d.features.includes(f));
  if (unwanted.length) return `has ${unwanted.join(', ')}`;
  const exe = executableOf(d);
  if (o.format !== undefined && exe.format !== o.format) return `format is ${exe.format}`;
  if (o.checkFiles ?? true) {
    if (!(await exists(exe.filename))) return `${exe.filename} is missing`;
    const tpl = nvramTemplateOf(d);
    if (tpl && !(await exists(tpl.filename))) return `${tpl.filename} is missing`;
  }
  return undefined;
}

function describeRequest(arch: string, m: ResolvedMachine, o: FindFirmwareOptions, w: Wanted) {
  const machine = m.concrete === m.requested ? m.requested : `${m.requested} (${m.concrete})`;
  const parts = [
    `${(o.interface ?? 'uefi').toUpperCase()} firmware for ${arch} machine ${machine}`,
  ];
  if (w.require.size) parts.push(`with ${[...w.require].join(', ')}`);
  if (w.refuse.size) parts.push(`without ${[...w.refuse].join(', ')}`);
  return parts.join(' ');
}

/**
 * Find the firmware QEMU should use. Throws EnvironmentError (code VMF_FW_NOT_FOUND) naming
 * what was asked, the Debian package that provides it and why each candidate was passed over.
 */
export async function findFirmware(options: FindFirmwareOptions = {}): Promise<FirmwareMatch> {
  const arch = options.arch ?? hostQemuArch();
  const wanted = normalizeFeatures(options);
  const lister = options.machineLister ?? qemuMachineLister(options.env, options.signal);
  const machine = await resolveMachine(arch, options.machine, lister);
  const list = await listFirmware(options);
  const rejected: Rejection[] = [];
  for (const e of list.entries) {
    options.signal?.throwIfAborted();
    if (!e.descriptor) {
      rejected.push({ name: e.name, path: e.path, reason: e.error ?? 'invalid' });
      continue;
    }
    const d = e.descriptor;
    const why = await mismatch(d, arch, machine.concrete, options, wanted);
    if (why) {
      rejected.push({ name: e.name, path: e.path, reason: why });
      continue;
    }
    const exe = executableOf(d);
    const tpl = nvramTemplateOf(d);
    return {
      name: e.name,
      descriptorPath: e.path,
      descriptor: d,
      arch,
      machine,
      device: d.mapping.device,
      ...(d.mapping.device === 'flash' ? { mode: d.mapping.mode } : {}),
      code: { path: exe.filename, format: exe.format },
      ...(tpl ? { varsTemplate: { path: tpl.filename, format: tpl.format } } : {}),
      features: d.features,
    };
  }
  const pkg = FIRMWARE_PACKAGES[arch];
  const relevant = rejected.filter((r) => !r.reason.startsWith('for '));
  const lines = [`No ${describeRequest(arch, machine, options, wanted)}.`];
  lines.push(
    pkg
      ? `Install the Debian package ${pkg}, or use 'vmforge firmware fetch' or 'vmforge firmware build'.`
      : `Use 'vmforge firmware fetch' or 'vmforge firmware build' to provide one.`,
  );
  if (relevant.length) lines.push(...relevant.map((r) => `  ${r.name}: ${r.reason}`));
  else lines.push(`  (no descriptor for ${arch} in ${list.dirs.join(', ')})`);
  throw new EnvironmentError(lines.join('\n'), {
    code: 'VMF_FW_NOT_FOUND',
    details: { arch, machine: machine.concrete, package: pkg, rejected },
  });
}
