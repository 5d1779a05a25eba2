// The unpacked member must be UEFI firmware before it enters the cache: a code image holds a
// code firmware volume, a vars image a variable store (or is blank); qcow2 members are read
// through the qcow2 driver.

import { CorruptImageError } from '../../core/index.js';
import { findFirmwareVolumes, isBlankImage } from '../firmware-volume.js';
import { openFirmwareReader } from '../image-reader.js';
import { sniffImage } from '../image-format.js';

export async function checkFirmwareFile(
  path: string,
  role: 'code' | 'vars',
  label: string,
  signal?: AbortSignal,
): Promise<void> {
  const s = await sniffImage(path);
  if (s.format === 'qcow2' && (s.qcow2?.hasBackingFile || s.qcow2?.encrypted))
    throw new CorruptImageError(
      `'${label}' is a qcow2 image with a backing file or encryption; firmware must be self-contained`,
      { code: 'VMF_FW_NOT_FV' },
    );
  const reader = await openFirmwareReader(path, s.format);
  try {
    const vols = await findFirmwareVolumes(reader, signal ? { signal } : {});
    const ok =
      role === 'code'
        ? vols.some((v) => v.kind === 'ffs2' || v.kind === 'ffs3')
        : vols.some((v) => v.kind === 'nvram') ||
          (vols.length === 0 && (await isBlankImage(reader, signal)));
    if (!ok)
      throw new CorruptImageError(
        `'${label}' is not UEFI firmware ${role === 'code' ? 'code' : 'variables'}: no ${role === 'code' ? 'firmware' : 'variable-store'} volume header found; nothing was stored`,
        { code: 'VMF_FW_NOT_FV' },
      );
  } finally {
    await reader.close();
  }
}
