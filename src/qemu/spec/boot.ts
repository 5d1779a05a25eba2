// `firmware` and direct kernel boot (`kernel`, `initrd`, `append`, `dtb`). UEFI comes through a
// FirmwareProvider (src/edk2); `none` is a direct kernel boot (DTB boot on aarch64 virt).

import type { Arch, FirmwareModel, KernelModel, MachineModel } from '../model.js';
import type { ObjectReader } from './reader.js';

export function readKernel(spec: ObjectReader, arch: Arch): KernelModel | undefined {
  const kernel = spec.opt('kernel');
  const initrd = spec.opt('initrd');
  const append = spec.opt('append');
  const dtb = spec.opt('dtb');
  if (!kernel) {
    for (const f of [initrd, append, dtb]) if (f) f.fail('needs `kernel`');
    return undefined;
  }
  if (dtb && arch !== 'aarch64') dtb.fail('a DTB is only used on aarch64');
  return {
    path: kernel.nonEmptyString(),
    initrd: initrd?.nonEmptyString(),
    append: append?.string(),
    dtb: dtb?.nonEmptyString(),
  };
}

export function readFirmware(
  spec: ObjectReader,
  arch: Arch,
  machine: MachineModel,
  kernel: KernelModel | undefined,
): FirmwareModel {
  const f = spec.field('firmware');
  const types =
    arch === 'aarch64' ? (['uefi', 'none'] as const) : (['uefi', 'bios', 'none'] as const);
  let fw: FirmwareModel;
  if (!f.present) {
    fw = kernel ? { type: 'none' } : uefi();
  } else if (!f.isObject()) {
    const t = f.oneOf(types);
    fw =
      t === 'uefi' ? uefi() : t === 'bios' ? { type: 'bios', path: undefined } : { type: 'none' };
  } else {
    const o = f.object();
    const t = o.field('type').oneOf(types);
    if (t === 'uefi') {
      fw = {
        type: 'uefi',
        secureBoot: o.opt('secureBoot')?.bool() ?? false,
        code: o.opt('code')?.nonEmptyString(),
        varsTemplate: o.opt('varsTemplate')?.nonEmptyString(),
        vars: o.opt('vars')?.nonEmptyString(),
      };
    } else if (t === 'bios') {
      fw = { type: 'bios', path: o.opt('path')?.nonEmptyString() };
    } else {
      fw = { type: 'none' };
    }
    o.done();
  }
  if (fw.type === 'none' && !kernel) {
    f.fail('firmware none boots a kernel directly: set `kernel` (or use firmware uefi)');
  }
  if (fw.type === 'uefi' && fw.secureBoot && arch === 'x86_64') {
    // OVMF's secure-boot build keeps its variable store in SMM (OvmfPkg/README).
    const smm = machine.props.find(([k]) => k === 'smm');
    if (smm?.[1] === 'off') f.fail('secureBoot on x86_64 needs machine.smm (it is off)');
    if (machine.family === 'pc') f.fail('secureBoot on x86_64 needs the q35 machine (SMM)');
    if (!smm) machine.props.push(['smm', 'on']);
  }
  return fw;
}

function uefi(): FirmwareModel {
  return {
    type: 'uefi',
    secureBoot: false,
    code: undefined,
    varsTemplate: undefined,
    vars: undefined,
  };
}
