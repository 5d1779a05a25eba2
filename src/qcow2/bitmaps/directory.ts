// The bitmap directory (qcow2.rst "Bitmaps extension", "Bitmap directory"): decode / validate /
// encode. Validation is QEMU 7.2's check_dir_entry() and bitmap_list_load(), with its messages;
// encoding is bitmap_list_store()'s layout (entries padded to 8 bytes, no extra data).

import { CorruptImageError, decodeByteString, encodeByteString } from '../../core/index.js';

export const BME_FLAG_IN_USE = 1;
export const BME_FLAG_AUTO = 2;
export const BME_RESERVED_FLAGS = 0xfffffffc;
/** Entries of one bitmap table (BME_MAX_TABLE_SIZE). */
export const BME_MAX_TABLE_SIZE = 0x8000000;
/** Bytes of bitmap data one bitmap may have (BME_MAX_PHYS_SIZE, bounds the bitmap in RAM). */
export const BME_MAX_PHYS_SIZE = 0x20000000;
export const BME_MIN_GRANULARITY_BITS = 9;
export const BME_MAX_GRANULARITY_BITS = 31;
export const BME_MAX_NAME_SIZE = 1023;
/** The only bitmap type (BT_DIRTY_TRACKING_BITMAP). */
export const BITMAP_TYPE_DIRTY_TRACKING = 1;
const ENTRY_HEADER = 24;

export interface Qcow2Bitmap {
  name: string;
  tableOffset: number;
  /** Entries of the bitmap table. */
  tableSize: number;
  flags: number;
  type: number;
  granularityBits: number;
}

/** calc_dir_entry_size(): header + name, padded to 8 bytes. */
export function dirEntrySize(nameBytes: number): number {
  return Math.ceil((ENTRY_HEADER + nameBytes) / 8) * 8;
}

/** check_dir_entry(): whether an entry satisfies the spec's constraints for this image. */
export function dirEntryValid(
  e: Omit<Qcow2Bitmap, 'name'> & { nameSize: number },
  clusterSize: number,
  imageSize: number,
): boolean {
  if (
    e.tableSize === 0 ||
    e.tableOffset === 0 ||
    e.tableOffset % clusterSize !== 0 ||
    e.tableSize > BME_MAX_TABLE_SIZE ||
    e.granularityBits > BME_MAX_GRANULARITY_BITS ||
    e.granularityBits < BME_MIN_GRANULARITY_BITS ||
    (e.flags & BME_RESERVED_FLAGS) !== 0 ||
    e.nameSize > BME_MAX_NAME_SIZE ||
    e.type !== BITMAP_TYPE_DIRTY_TRACKING
  ) {
    return false;
  }
  const phys = e.tableSize * clusterSize;
  if (phys > BME_MAX_PHYS_SIZE) return false;
  // A valid (not in use) bitmap must cover the whole image; an in-use one may be stale after a
  // resize, which is fine since its data is never used.
  return (e.flags & BME_FLAG_IN_USE) !== 0 || imageSize <= phys * 8 * 2 ** e.granularityBits;
}

/** bitmap_list_load(): decode and validate the directory, with QEMU's messages. */
export function decodeBitmapDirectory(
  dir: Uint8Array,
  nbBitmaps: number,
  clusterSize: number,
  imageSize: number,
): Qcow2Bitmap[] {
  if (dir.length === 0) throw new CorruptImageError('Requested bitmap directory size is zero');
  const view = new DataView(dir.buffer, dir.byteOffset, dir.byteLength);
  const out: Qcow2Bitmap[] = [];
  let pos = 0;
  while (pos < dir.length) {
    if (pos + ENTRY_HEADER > dir.length) throw new CorruptImageError('Broken bitmap directory');
    if (out.length + 1 > nbBitmaps) {
      throw new CorruptImageError('More bitmaps found than specified in header extension');
    }
    const tableOffset = Number(view.getBigUint64(pos));
    const tableSize = view.getUint32(pos + 8);
    const flags = view.getUint32(pos + 12);
    const type = dir[pos + 16]!;
    const granularityBits = dir[pos + 17]!;
    const nameSize = view.getUint16(pos + 18);
    const extraSize = view.getUint32(pos + 20);
    const entrySize = Math.ceil((ENTRY_HEADER + extraSize + nameSize) / 8) * 8;
    if (pos + entrySize > dir.length) throw new CorruptImageError('Broken bitmap directory');
    if (extraSize !== 0) throw new CorruptImageError('Bitmap extra data is not supported');
    const nameBytes = dir.subarray(pos + ENTRY_HEADER, pos + ENTRY_HEADER + nameSize);
    const name = decodeByteString(nameBytes);
    const entry = { name, tableOffset, tableSize, flags, type, granularityBits };
    if (!dirEntryValid({ ...entry, nameSize }, clusterSize, imageSize)) {
      throw new CorruptImageError(`Bitmap '${name}' doesn't satisfy the constraints`);
    }
    out.push(entry);
    pos += entrySize;
  }
  if (out.length !== nbBitmaps) {
    throw new CorruptImageError('Less bitmaps found than specified in header extension');
  }
  return out;
}

/**
 * bitmap_list_store()'s directory bytes. Returns undefined where QEMU fails with -EINVAL: an
 * empty list, or an entry that does not satisfy check_dir_entry().
 */
export function encodeBitmapDirectory(
  list: readonly Qcow2Bitmap[],
  clusterSize: number,
  imageSize: number,
): Uint8Array | undefined {
  const names = list.map((b) => encodeByteString(b.name));
  const size = names.reduce((n, name) => n + dirEntrySize(name.length), 0);
  if (size === 0) return undefined;
  const dir = new Uint8Array(size);
  const view = new DataView(dir.buffer);
  let pos = 0;
  for (let i = 0; i < list.length; i++) {
    const b = list[i]!;
    const name = names[i]!;
    const entry = { ...b, type: BITMAP_TYPE_DIRTY_TRACKING, nameSize: name.length };
    if (!dirEntryValid(entry, clusterSize, imageSize)) return undefined;
    view.setBigUint64(pos, BigInt(b.tableOffset));
    view.setUint32(pos + 8, b.tableSize);
    view.setUint32(pos + 12, b.flags);
    dir[pos + 16] = BITMAP_TYPE_DIRTY_TRACKING;
    dir[pos + 17] = b.granularityBits;
    view.setUint16(pos + 18, name.length);
    view.setUint32(pos + 20, 0);
    dir.set(name, pos + ENTRY_HEADER);
    pos += dirEntrySize(name.length);
  }
  return dir;
}

/** qemu-img info's flag names, in QEMU's order. */
export function bitmapFlagNames(flags: number): ('in-use' | 'auto')[] {
  const names: ('in-use' | 'auto')[] = [];
  if (flags & BME_FLAG_IN_USE) names.push('in-use');
  if (flags & BME_FLAG_AUTO) names.push('auto');
  return names;
}
