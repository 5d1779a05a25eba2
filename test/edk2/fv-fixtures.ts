// Synthetic firmware images for tests: valid FV headers placed where real images have them.
import { encodeFirmwareVolumeHeader } from '../../src/edk2/firmware-volume.js';
import { FV_GUIDS } from '../../src/edk2/constants.js';

/** An image of `size` bytes (0xff-filled like erased flash) with volumes at the given offsets. */
export function flashImage(
  size: number,
  volumes: { offset: number; length: number; guid?: string }[],
  fill = 0xff,
): Uint8Array {
  const img = new Uint8Array(size).fill(fill);
  for (const v of volumes) {
    img.set(
      encodeFirmwareVolumeHeader({ fvLength: v.length, fileSystemGuid: v.guid ?? FV_GUIDS.ffs2 }),
      v.offset,
    );
  }
  return img;
}

/** Like ArmVirtQemu's QEMU_EFI.fd: a branch at 0, the code FV at 0x1000. */
export function armCode(size = 0x40000): Uint8Array {
  const img = flashImage(size, [{ offset: 0x1000, length: size - 0x1000 }]);
  img.set([0x00, 0x04, 0x00, 0x14], 0);
  return img;
}

/** Like OVMF_VARS.fd: one NV-data volume. */
export function varsImage(size = 0x20000): Uint8Array {
  return flashImage(size, [{ offset: 0, length: size, guid: FV_GUIDS.nvram }]);
}

/** Like OVMF_CODE.fd: two chained code volumes from offset 0. */
export function ovmfCode(): Uint8Array {
  return flashImage(0x30000, [
    { offset: 0, length: 0x20000 },
    { offset: 0x20000, length: 0x10000 },
  ]);
}

export function memReader(buf: Uint8Array) {
  return {
    size: buf.length,
    read: async (offset: number, length: number) => buf.subarray(offset, offset + length),
  };
}
