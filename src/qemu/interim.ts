// Interim providers, used until src/edk2, src/hugetlbfs and the qcow2 engine (src/block/open.ts)
// are on main. Each does the least that is honest: a fixed table of Debian firmware paths, a
// magic-number format sniff, and a clear "not yet" for huge pages and snapshot overlays.
// Replace with the real adapters (see docs/launcher.md "Integration") as those libraries land.

import { copyFile, open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EnvironmentError, NotSupportedError, fromSystemError } from '../core/index.js';
import type {
  DiskImages,
  FirmwareProvider,
  FirmwareRequest,
  HugepagePlanner,
  LaunchProviders,
  PreparedFirmware,
} from './providers.js';

const MiB = 1024 * 1024;

/** Debian's qemu-efi-aarch64 and ovmf packages (the files their firmware.json descriptors name). */
const DEBIAN_FIRMWARE = {
  aarch64: {
    plain: ['/usr/share/AAVMF/AAVMF_CODE.fd', '/usr/share/AAVMF/AAVMF_VARS.fd'],
    secure: ['/usr/share/AAVMF/AAVMF_CODE.ms.fd', '/usr/share/AAVMF/AAVMF_VARS.ms.fd'],
    pkg: 'qemu-efi-aarch64',
  },
  x86_64: {
    plain: ['/usr/share/OVMF/OVMF_CODE_4M.fd', '/usr/share/OVMF/OVMF_VARS_4M.fd'],
    secure: ['/usr/share/OVMF/OVMF_CODE_4M.ms.fd', '/usr/share/OVMF/OVMF_VARS_4M.ms.fd'],
    pkg: 'ovmf',
  },
} as const;

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Firmware from Debian's fixed paths (or the spec's explicit files); vars copied per VM. */
export function debianFirmwareProvider(): FirmwareProvider {
  const find = async (req: FirmwareRequest): Promise<PreparedFirmware & { template: string }> => {
    const table = DEBIAN_FIRMWARE[req.arch];
    const [code, vars] = req.secureBoot ? table.secure : table.plain;
    const codePath = req.code ?? code;
    const template = req.varsTemplate ?? (req.code ? undefined : vars);
    if (template === undefined) {
      throw new EnvironmentError(
        'firmware.code is set without firmware.varsTemplate: give the vars template built with it',
        { code: 'VMF_FIRMWARE_NOT_FOUND' },
      );
    }
    for (const p of [codePath, template]) {
      if (!(await exists(p))) {
        throw new EnvironmentError(
          `UEFI firmware for ${req.arch} not found: ${p} is missing (install the Debian package ${table.pkg})`,
          { code: 'VMF_FIRMWARE_NOT_FOUND', details: { path: p, package: table.pkg } },
        );
      }
    }
    if (req.arch === 'aarch64') {
      // virt maps two 64 MiB pflash banks and QEMU refuses other sizes (virt.rst; reference §1.7).
      for (const p of [codePath, template]) {
        const size = (await stat(p)).size;
        if (size !== 64 * MiB) {
          throw new EnvironmentError(
            `${p} is ${size} bytes; aarch64 virt pflash needs exactly 64 MiB (pad it with 'vmforge firmware prepare')`,
            { code: 'VMF_FIRMWARE_SIZE' },
          );
        }
      }
    }
    return { code: codePath, vars: join(req.outDir, 'VARS.fd'), format: 'raw', template };
  };
  return {
    async locate(req) {
      const { code, vars, format } = await find(req);
      return { code, vars, format };
    },
    async prepare(req) {
      const found = await find(req);
      try {
        await copyFile(found.template, found.vars);
      } catch (err) {
        throw fromSystemError(err, `Could not copy the UEFI vars template to '${found.vars}'`);
      }
      return { code: found.code, vars: found.vars, format: found.format };
    },
  };
}

/** Format sniffing by magic (qcow2 "QFI\xfb", else raw) until src/block/open.ts lands. */
export function interimDiskImages(): DiskImages {
  return {
    async probeFormat(path) {
      let fh;
      try {
        fh = await open(path, 'r');
      } catch (err) {
        throw fromSystemError(err, `Could not open disk '${path}'`);
      }
      try {
        const buf = Buffer.alloc(4);
        const { bytesRead } = await fh.read(buf, 0, 4, 0);
        return bytesRead === 4 && buf.readUInt32BE(0) === 0x514649fb ? 'qcow2' : 'raw';
      } finally {
        await fh.close();
      }
    },
    createOverlay() {
      return Promise.reject(
        new NotSupportedError(
          'disks[].snapshot needs the vmforge qcow2 engine (src/qcow2), which is not integrated yet',
          { code: 'VMF_PENDING_INTEGRATION' },
        ),
      );
    },
  };
}

export function interimHugepagePlanner(): HugepagePlanner {
  return {
    planBackend() {
      return Promise.reject(
        new NotSupportedError(
          'memory.hugepages needs src/hugetlbfs (vmforge hugepages), which is not integrated yet',
          { code: 'VMF_PENDING_INTEGRATION' },
        ),
      );
    },
  };
}

/** The providers `vmforge run` uses today. */
export function defaultProviders(): LaunchProviders {
  return {
    firmware: debianFirmwareProvider(),
    hugepages: interimHugepagePlanner(),
    images: interimDiskImages(),
  };
}
