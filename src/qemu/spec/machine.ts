// `arch`, `machine` and `accel`: which qemu-system binary, which board, which accelerator.
// Machine properties follow docs/system/arm/virt.rst (aarch64 `virt`) and hw/i386/pc*.c (x86).

import type { AccelChoice, Arch, MachineFamily, MachineModel } from '../model.js';
import { Field, type ObjectReader } from './reader.js';

export const ARCHES = ['aarch64', 'x86_64'] as const;

/** The host's architecture in QEMU's naming, used when the spec omits `arch`. */
export function hostArch(): Arch | undefined {
  if (process.arch === 'x64') return 'x86_64';
  if (process.arch === 'arm64') return 'aarch64';
  return undefined;
}

export function readArch(spec: ObjectReader): Arch {
  const f = spec.opt('arch');
  if (f) return f.oneOf(ARCHES);
  const host = hostArch();
  return host ?? new Field(undefined, 'arch').fail(`required on a ${process.arch} host`);
}

export function readAccel(spec: ObjectReader): AccelChoice {
  return spec.opt('accel')?.oneOf(['auto', 'kvm', 'tcg'] as const) ?? 'auto';
}

const MACHINE_TYPES: Record<Arch, string[]> = {
  aarch64: ['virt', 'virt-X.Y'],
  x86_64: ['q35', 'pc-q35-X.Y', 'pc', 'pc-i440fx-X.Y'],
};

function familyOf(arch: Arch, type: string): MachineFamily | undefined {
  if (arch === 'aarch64') return /^virt(-\d+\.\d+)?$/.test(type) ? 'virt' : undefined;
  if (/^(q35|pc-q35-\d+\.\d+)$/.test(type)) return 'q35';
  if (/^(pc|pc-i440fx-\d+\.\d+)$/.test(type)) return 'pc';
  return undefined;
}

const onOff = (b: boolean): string => (b ? 'on' : 'off');

/** Boolean `-machine` properties, spec name → QEMU name, with the families that have them. */
const BOOL_PROPS: [string, string, MachineFamily[]][] = [
  ['highmem', 'highmem', ['virt']],
  ['secure', 'secure', ['virt']],
  ['virtualization', 'virtualization', ['virt']],
  ['mte', 'mte', ['virt']],
  ['ras', 'ras', ['virt']],
  ['its', 'its', ['virt']],
  ['smm', 'smm', ['q35', 'pc']],
  ['nvdimm', 'nvdimm', ['virt', 'q35', 'pc']],
  ['acpi', 'acpi', ['virt', 'q35', 'pc']],
];

/**
 * `machine`: a type name, or a mapping `{type, gicVersion, its, iommu, highmem, secure,
 * virtualization, mte, ras, nvdimm, smm, acpi}`. Properties a family lacks are rejected.
 */
export function readMachine(spec: ObjectReader, arch: Arch): MachineModel {
  const f = spec.field('machine');
  const defaultType = arch === 'aarch64' ? 'virt' : 'q35';
  if (!f.present) return machineOf(arch, defaultType, f);
  if (!f.isObject()) return machineOf(arch, f.string(), f);

  const o = f.object();
  const typeField = o.field('type');
  const m = machineOf(arch, typeField.present ? typeField.string() : defaultType, typeField);
  for (const [key, prop, families] of BOOL_PROPS) {
    const v = o.opt(key);
    if (!v) continue;
    requireFamily(v, m.family, families);
    m.props.push([prop, onOff(v.bool())]);
  }
  const gic = o.opt('gicVersion');
  if (gic) {
    requireFamily(gic, m.family, ['virt']);
    const g = gic.oneOf(['2', '3', '4', 'host', 'max'] as const);
    setProp(m, 'gic-version', g);
  }
  const iommu = o.opt('iommu');
  if (iommu) {
    if (m.family === 'virt') {
      const v = iommu.oneOf(['none', 'smmuv3'] as const);
      m.props.push(['iommu', v]);
    } else {
      const v = iommu.oneOf(['none', 'intel'] as const);
      if (v === 'intel' && m.family !== 'q35') iommu.fail('intel-iommu needs machine type q35');
      m.intelIommu = v === 'intel';
    }
  }
  o.done();
  return m;
}

function setProp(m: MachineModel, key: string, value: string): void {
  const i = m.props.findIndex(([k]) => k === key);
  if (i >= 0) m.props[i] = [key, value];
  else m.props.push([key, value]);
}

function requireFamily(f: Field, family: MachineFamily, families: MachineFamily[]): void {
  if (!families.includes(family)) {
    f.fail(`not a property of the ${family} machine (only of: ${families.join(', ')})`);
  }
}

function machineOf(arch: Arch, type: string, f: Field): MachineModel {
  const family = familyOf(arch, type);
  if (!family) {
    f.fail(
      `machine type ${JSON.stringify(type)} is not supported for arch ${arch}; ` +
        `expected one of ${MACHINE_TYPES[arch].join(', ')}`,
      { allowed: MACHINE_TYPES[arch] },
    );
  }
  // GICv3 by default on virt: QEMU's own default (v2) caps the guest at 8 CPUs and lacks ITS
  // (virt.rst "gic-version"); libvirt and lima also pick v3.
  const props: [string, string][] = family === 'virt' ? [['gic-version', '3']] : [];
  return { type, family, props, intelIommu: false };
}
