// Bitmaps across images: qemu-img convert --bitmaps [--skip-broken-bitmaps]
// (convert_check_bitmaps, convert_copy_bitmaps in qemu-img.c). What measure reserves for them
// is src/img/measure.ts persistentBitmapsSize.

import type { BlockDevice } from '../../block/device.js';
import { InvalidArgumentError, NotSupportedError, withContext } from '../../core/index.js';
import type { Qcow2Device } from '../qcow2-device.js';
import { persistentBitmaps } from './persistent-bitmaps.js';

function asQcow2(dev: BlockDevice): Qcow2Device | undefined {
  return dev.format === 'qcow2' ? (dev as Qcow2Device) : undefined;
}

/**
 * convert_check_bitmaps(): the source must support persistent bitmaps and, unless
 * `skipBroken`, have no inconsistent (in use) ones. Loads the source's bitmaps.
 */
export async function checkBitmapsCopyable(src: BlockDevice, skipBroken: boolean): Promise<void> {
  const q = asQcow2(src);
  if (!q || q.header.version < 3) throw new NotSupportedError('Source lacks bitmap support');
  const set = persistentBitmaps(q);
  await set.loadAll();
  for (const bm of set.bitmaps) {
    if (!bm.persistent) continue;
    if (!skipBroken && bm.inconsistent) {
      throw new InvalidArgumentError(`Cannot copy inconsistent bitmap '${bm.name}'`).withHint(
        "Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it",
      );
    }
  }
}

/** The target must store persistent bitmaps: "Format driver 'raw' does not support bitmaps". */
export function checkBitmapsTarget(dst: BlockDevice): void {
  const q = asQcow2(dst);
  if (!q || q.header.version < 3) {
    throw new NotSupportedError(`Format driver '${dst.format}' does not support bitmaps`);
  }
}

/**
 * convert_copy_bitmaps(): after the data copy, every persistent bitmap of `src` becomes a bitmap
 * of `dst` with the same name, granularity, enabled state and bits (stored when `dst` closes).
 * Inconsistent ones are skipped with a warning when `skipBroken`.
 */
export async function copyBitmaps(
  src: BlockDevice,
  dst: BlockDevice,
  options: { skipBroken: boolean; onWarning?: ((message: string) => void) | undefined },
): Promise<void> {
  const from = persistentBitmaps(asQcow2(src)!);
  const to = persistentBitmaps(asQcow2(dst)!);
  await from.loadAll();
  await to.loadAll();
  for (const bm of [...from.bitmaps]) {
    if (!bm.persistent) continue;
    if (options.skipBroken && bm.inconsistent) {
      options.onWarning?.(`Skipping inconsistent bitmap '${bm.name}'`);
      continue;
    }
    try {
      await to.add(bm.name, { granularity: bm.granularity, disabled: !bm.enabled });
    } catch (err) {
      throw withContext(err, `Failed to create bitmap ${bm.name}`);
    }
    try {
      await to.merge(bm.name, bm);
    } catch (err) {
      await to.remove(bm.name).catch(() => undefined);
      throw withContext(err, `Failed to populate bitmap ${bm.name}`);
    }
  }
}
