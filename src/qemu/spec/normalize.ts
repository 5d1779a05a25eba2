// Spec (parsed YAML/JSON) → VmModel: apply defaults, validate every field and the rules that
// span sections. Pure: no file system, no QEMU. Errors are SpecErrors naming the field.

import type { VmModel } from '../model.js';
import { readFirmware, readKernel } from './boot.js';
import { readCpu, readSmp } from './cpu.js';
import { readDisks } from './disks.js';
import {
  readDisplay,
  readExtraArgs,
  readIncoming,
  readName,
  readQmp,
  readRtc,
  readSerial,
  readShares,
  readSmbios,
  readUuid,
} from './extras.js';
import { readAccel, readArch, readMachine } from './machine.js';
import { readMemory } from './memory.js';
import { readNetworks } from './network.js';
import { Field, SpecError } from './reader.js';

/** Top-level spec keys, in documentation order. */
export const SPEC_KEYS = [
  'name',
  'uuid',
  'arch',
  'emulator',
  'machine',
  'accel',
  'cpu',
  'smp',
  'memory',
  'firmware',
  'kernel',
  'initrd',
  'append',
  'dtb',
  'disks',
  'network',
  'shares',
  'serial',
  'qmp',
  'display',
  'incoming',
  'smbios',
  'rtc',
  'extraArgs',
] as const;

export function normalizeSpec(spec: unknown): VmModel {
  const o = new Field(spec, '').object();
  const name = readName(o);
  const uuid = readUuid(o);
  const arch = readArch(o);
  const emulator = o.opt('emulator')?.nonEmptyString();
  const machine = readMachine(o, arch);
  const accel = readAccel(o);
  const cpu = readCpu(o);
  if (cpu.model === 'host' && accel === 'tcg') {
    o.field('cpu').fail('cpu model host needs KVM; with accel tcg use max (or a named model)');
  }
  const gic = machine.props.find(([k]) => k === 'gic-version')?.[1] ?? '3';
  const smp = readSmp(o, machine.family, gic);
  const memory = readMemory(o, smp);
  const kernel = readKernel(o, arch);
  const firmware = readFirmware(o, arch, machine, kernel);
  const disks = readDisks(o.field('disks'));
  const networks = readNetworks(o.field('network'));
  const shares = readShares(o.field('shares'));
  const model: VmModel = {
    name,
    uuid,
    arch,
    emulator,
    machine,
    accel,
    cpu,
    smp,
    memory,
    firmware,
    kernel,
    disks,
    networks,
    shares,
    serial: readSerial(o.field('serial')),
    qmp: readQmp(o.field('qmp')),
    display: readDisplay(o.field('display')),
    incoming: readIncoming(o),
    smbios: readSmbios(o.field('smbios')),
    rtc: readRtc(o.field('rtc')),
    extraArgs: readExtraArgs(o),
  };
  o.done();
  applyCrossRules(model);
  return model;
}

function applyCrossRules(m: VmModel): void {
  // virtio-fs maps guest RAM into virtiofsd, so it must be shared (docs/system/devices/vhost-user.rst).
  if (m.shares.some((s) => s.kind === 'virtiofs')) {
    const b = m.memory.backend;
    if (!m.memory.backendExplicit) {
      m.memory.backend = { kind: 'memfd', share: true, prealloc: false };
    } else if (!b.share) {
      throw new SpecError(
        'memory.backend',
        'virtio-fs shares need shared guest memory: set share: true',
      );
    }
  }
  if (m.memory.dimms.some((d) => d.type === 'nvdimm')) {
    const nv = m.machine.props.find(([k]) => k === 'nvdimm');
    if (nv?.[1] === 'off')
      throw new SpecError(
        'machine.nvdimm',
        'memory.dimms has an nvdimm, so machine.nvdimm must be on',
      );
    if (!nv) m.machine.props.push(['nvdimm', 'on']);
  }
  if (m.memory.dimms.length > 0 && m.arch === 'aarch64' && m.firmware.type !== 'uefi') {
    // virt only plugs DIMMs through ACPI (acpi-ged), which a DTB-only kernel boot does not see.
    throw new SpecError('memory.dimms', 'DIMMs on aarch64 virt need ACPI, i.e. firmware uefi');
  }
}
