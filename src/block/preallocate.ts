// Growing a host file with a preallocation mode, as QEMU's file-posix raw_regular_truncate():
//   off    ftruncate (and allocate the first block of a previously empty file, which QEMU does
//          to make alignment probing reliable; qemu-img map shows it as data)
//   falloc posix_fallocate() the new range (fallocate via the native helper, else zeros)
//   full   ftruncate, then write zeros over the new range
import { InvalidArgumentError } from '../core/index.js';
import type { FileStorage } from './file-storage.js';
import { nativeFileOps } from './native.js';
import type { Storage } from './storage.js';

export type PreallocMode = 'off' | 'metadata' | 'falloc' | 'full';

export function parsePreallocMode(text: string): PreallocMode {
  if (text === 'off' || text === 'metadata' || text === 'falloc' || text === 'full') return text;
  throw new InvalidArgumentError(`Parameter 'preallocation' does not accept value '${text}'`, {
    code: 'VMF_PREALLOC',
  });
}

const ZEROS = new Uint8Array(65536);

async function writeZeros(storage: Storage, from: number, to: number): Promise<void> {
  for (let pos = from; pos < to; pos += ZEROS.length) {
    await storage.write(ZEROS.subarray(0, Math.min(ZEROS.length, to - pos)), pos);
  }
}

/** How much QEMU's allocate_first_block() writes: 512 bytes for tiny files, else 4 KiB. */
export function firstBlockLength(size: number): number {
  return size < 4096 ? 512 : 4096;
}

/** QEMU allocate_first_block(): zeros at offset 0. */
async function allocateFirstBlock(storage: Storage, size: number): Promise<void> {
  await storage.write(ZEROS.subarray(0, firstBlockLength(size)), 0);
}

/**
 * Resize a host file to `size` bytes with QEMU's preallocation semantics (growing only
 * preallocates). `firstBlock: false` leaves the first block of a new file to the caller
 * (convert's target allocates it at close, inside the space it reserved: ReserveAhead `fill`).
 */
export async function truncateHostFile(
  storage: Storage,
  size: number,
  mode: PreallocMode,
  { firstBlock = true }: { firstBlock?: boolean } = {},
): Promise<void> {
  const current = await storage.size();
  switch (mode) {
    case 'off':
      await storage.truncate(size);
      if (current === 0 && size > 0 && firstBlock) await allocateFirstBlock(storage, size);
      return;
    case 'falloc': {
      if (size <= current) return;
      const fd = (storage as Partial<FileStorage>).fd;
      const native = nativeFileOps();
      if (native && fd !== undefined && native.allocate(fd, current, size - current)) {
        if (current === 0) await allocateFirstBlock(storage, size);
        return;
      }
      // posix_fallocate falls back to writing zeros where fallocate is unsupported.
      await writeZeros(storage, current, size);
      return;
    }
    case 'full':
      await storage.truncate(size);
      if (size > current) await writeZeros(storage, current, size);
      await storage.flush();
      return;
    default:
      throw new InvalidArgumentError(`Unsupported preallocation mode: ${mode}`);
  }
}
