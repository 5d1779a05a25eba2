// Guest-visible bytes of a firmware file for the FV checks: a raw file is read directly, a
// qcow2 file through the qcow2 driver (src/image openImage, read-only, backing never opened —
// firmware with a backing file is refused before this point).

import { open } from 'node:fs/promises';
import { fromSystemError } from '../core/index.js';
import { openImage } from '../image/index.js';
import type { ImageReader } from './firmware-volume.js';

export type ClosableReader = ImageReader & { close(): Promise<void> };

export async function openFirmwareReader(
  path: string,
  format: 'raw' | 'qcow2',
): Promise<ClosableReader> {
  if (format === 'qcow2') {
    const dev = await openImage(path, { format: 'qcow2', readOnly: true, backing: 'none' });
    return {
      size: dev.size,
      async read(offset, length) {
        const n = Math.max(0, Math.min(length, dev.size - offset));
        const buf = new Uint8Array(n);
        if (n > 0) await dev.read(buf, offset);
        return buf;
      },
      close: () => dev.close(),
    };
  }
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw fromSystemError(err, `Could not open '${path}'`);
  }
  const h = fh;
  const size = (await h.stat()).size;
  return {
    size,
    async read(offset, length) {
      const buf = new Uint8Array(length);
      const { bytesRead } = await h.read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    },
    close: () => h.close(),
  };
}
