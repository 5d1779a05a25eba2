// The unpacked member must be UEFI firmware before it enters the cache: a code image holds a
// code firmware volume, a vars image a variable store (or is blank). qcow2 members are
// accepted on their header (their contents need the qcow2 driver to read).

import { open } from 'node:fs/promises';
import { CorruptImageError } from '../../core/index.js';
import { findFirmwareVolumes, isBlankImage, type ImageReader } from '../firmware-volume.js';
import { sniffImage } from '../image-format.js';

export async function checkFirmwareFile(
  path: string,
  role: 'code' | 'vars',
  label: string,
  signal?: AbortSignal,
): Promise<void> {
  const s = await sniffImage(path);
  if (s.format === 'qcow2') return;
  const fh = await open(path, 'r');
  try {
    const reader: ImageReader = {
      size: s.fileSize,
      async read(offset, length) {
        const buf = new Uint8Array(length);
        const { bytesRead } = await fh.read(buf, 0, length, offset);
        return buf.subarray(0, bytesRead);
      },
    };
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
    await fh.close();
  }
}
