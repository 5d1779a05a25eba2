// Dirty bitmaps exported as "qemu:dirty-bitmap:NAME" metadata contexts (qemu-nbd -B; QEMU's
// docs/interop/nbd.txt): finding a bitmap for an export the way nbd_export_create() does (on
// the exported node, then down its filter/backing chain), refusing the ones qemu refuses, and
// turning a bitmap into BLOCK_STATUS extents the way bitmap_to_extents() does.

import type { BlockDevice } from '../block/device.js';
import { InvalidArgumentError } from '../core/index.js';
import { persistentBitmaps, type DirtyBitmap } from '../qcow2/bitmaps/index.js';
import { Qcow2Device } from '../qcow2/qcow2-device.js';
import { ExportDevice } from './export-device.js';
import { OverlayDevice } from './overlay-device.js';
import { NBD_STATE_DIRTY } from './protocol.js';
import type { StatusExtent } from './wire.js';

/** What an export needs of a dirty bitmap (a qcow2 persistent bitmap is one). */
export type NbdExportBitmap = Pick<
  DirtyBitmap,
  'name' | 'enabled' | 'readonly' | 'inconsistent' | 'dirtyRanges'
>;

function bitmapError(message: string): InvalidArgumentError {
  return new InvalidArgumentError(message, { code: 'VMF_BITMAP' });
}

/**
 * nbd_export_create()'s checks of a bitmap that was found, with its messages: an enabled
 * bitmap of a writable image cannot go on a read-only export (it could change under the
 * client), and an inconsistent one (left "in use" by a writer that did not close the image)
 * cannot be exported at all (bdrv_dirty_bitmap_check with BDRV_BITMAP_ALLOW_RO).
 */
export function checkExportBitmap(bitmap: NbdExportBitmap, exportReadOnly: boolean): void {
  if (exportReadOnly && !bitmap.readonly && bitmap.enabled) {
    throw bitmapError(`Enabled bitmap '${bitmap.name}' incompatible with readonly export`);
  }
  // qemu-nbd passes &error_fatal, so the "Try block-dirty-bitmap-remove" hint never prints.
  if (bitmap.inconsistent) {
    throw bitmapError(`Bitmap '${bitmap.name}' is inconsistent and cannot be used`);
  }
}

/**
 * The device below `dev` that QEMU's bdrv_filter_or_cow_bs() would step to: an ExportDevice
 * without an offset is the exported node itself (cache/discard/detect-zeroes are options of that
 * node), one with an offset is qemu-nbd's raw node with "offset" (not a filter: the walk stops),
 * the -s overlay and qcow2 images lead to their backing.
 */
function below(dev: BlockDevice): BlockDevice | undefined {
  if (dev instanceof ExportDevice) return dev.offset === 0 ? dev.inner : undefined;
  if (dev instanceof OverlayDevice) return dev.backing;
  if (dev instanceof Qcow2Device) return dev.backing;
  return undefined;
}

/** The bitmap named `name` on `dev` or the first image below it that has one. */
async function findBitmap(dev: BlockDevice, name: string): Promise<DirtyBitmap | undefined> {
  for (let d: BlockDevice | undefined = dev; d; d = below(d)) {
    // instanceof, not format: an ExportDevice reports the format of the image it wraps.
    if (!(d instanceof Qcow2Device)) continue;
    // QEMU loads every bitmap when it opens an image (marking them in use on a writable one):
    // a writable image's bitmaps are loaded now, so that writes to the export keep them.
    const set = persistentBitmaps(d);
    await set.loadAll();
    const bitmap = set.find(name);
    if (bitmap) return bitmap;
  }
  return undefined;
}

/**
 * The bitmaps `names` of the image behind an export, in the given order, each checked as
 * nbd_export_create() checks it, stopping at the first problem with qemu's message:
 * "Bitmap 'NAME' is not found", "Enabled bitmap 'NAME' incompatible with readonly export",
 * "Bitmap 'NAME' is inconsistent and cannot be used". A raw image, or an export with an offset,
 * has no bitmaps.
 */
export async function findExportBitmaps(
  device: BlockDevice,
  names: readonly string[],
  exportReadOnly: boolean,
): Promise<DirtyBitmap[]> {
  const out: DirtyBitmap[] = [];
  for (const name of names) {
    const bitmap = await findBitmap(device, name);
    if (!bitmap) throw bitmapError(`Bitmap '${name}' is not found`);
    checkExportBitmap(bitmap, exportReadOnly);
    out.push(bitmap);
  }
  return out;
}

/**
 * BLOCK_STATUS extents of a bitmap for [offset, offset + length), at most `max` of them
 * (qemu bitmap_to_extents): flag NBD_STATE_DIRTY where the bitmap is dirty, 0 where clean. Dirty
 * runs are whole granules clipped to the request, equal neighbours merge (within 32 bits), and
 * the request's tail after the last dirty run is one clean extent.
 */
export function bitmapExtents(
  bitmap: NbdExportBitmap,
  offset: number,
  length: number,
  max: number,
): StatusExtent[] {
  const out: StatusExtent[] = [];
  // nbd_extent_array_add(): false once the array is full.
  const add = (n: number, flags: number): boolean => {
    if (n === 0) return true;
    const last = out[out.length - 1];
    if (last && last.flags === flags && last.length + n <= 0xffff_ffff) {
      last.length += n;
      return true;
    }
    if (out.length >= max) return false;
    out.push({ length: n, flags });
    return true;
  };
  const end = offset + length;
  let pos = offset;
  for (const r of bitmap.dirtyRanges(offset, end)) {
    const start = Math.max(r.offset, pos);
    const stop = Math.min(r.offset + r.length, end);
    if (stop <= start) continue;
    if (!add(start - pos, 0) || !add(stop - start, NBD_STATE_DIRTY)) return out;
    pos = stop;
  }
  add(end - pos, 0);
  return out;
}
