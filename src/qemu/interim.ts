// Interim firmware provider, used until src/edk2 (issue #5) is on main: a fixed table of the
// paths Debian's qemu-efi-aarch64 and ovmf packages install, the vars template copied per VM,
// and the 64 MiB aarch64 pflash size checked (not padded). Replace with an adapter over
// src/edk2's discovery and `prepare` when it lands (docs/launcher.md "Integration status").

import { copyFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EnvironmentError, fromSystemError } from '../core/index.js';
import type { FirmwareProvider, FirmwareRequest, PreparedFirmware } from './providers.js';

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
