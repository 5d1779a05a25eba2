// Persistent dirty bitmaps: the bitmap directory (qcow2.rst "Bitmaps extension", "Bitmap
// directory"). Decoding follows QEMU's bitmap_list_load() / check_dir_entry() and messages.

import { CorruptImageError, decodeByteString } from '../core/index.js';

export const BME_FLAG_IN_USE = 1;
export const BME_FLAG_AUTO = 2;
const BME_RESERVED_FLAGS = 0xfffffffc;
const BME_MAX_TABLE_SIZE = 0x8000000;
const BME_MAX_PHYS_SIZE = 0x20000000;
const BME_MAX_NAME_SIZE = 1023;

export interface Qcow2Bitmap {
  name: string;
  tableOffset: number;
  tableSize: number;
  flags: number;
  type: number;
  granularityBits: number;
}

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
    if (pos + 24 > dir.length) throw new CorruptImageError('Broken bitmap directory');
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
    const entrySize = Math.ceil((24 + extraSize + nameSize) / 8) * 8;
    if (pos + entrySize > dir.length) throw new CorruptImageError('Broken bitmap directory');
    if (extraSize !== 0) throw new CorruptImageError('Bitmap extra data is not supported');
    const nameBytes = dir.subarray(pos + 24 + extraSize, pos + 24 + extraSize + nameSize);
    const name = decodeByteString(nameBytes);
    const phys = tableSize * clusterSize;
    const bad =
      tableSize === 0 ||
      tableOffset === 0 ||
      tableOffset % clusterSize !== 0 ||
      tableSize > BME_MAX_TABLE_SIZE ||
      granularityBits > 31 ||
      granularityBits < 9 ||
      (flags & BME_RESERVED_FLAGS) !== 0 ||
      nameSize > BME_MAX_NAME_SIZE ||
      type !== 1 ||
      phys > BME_MAX_PHYS_SIZE ||
      ((flags & BME_FLAG_IN_USE) === 0 && imageSize > phys * 8 * 2 ** granularityBits);
    if (bad) throw new CorruptImageError(`Bitmap '${name}' doesn't satisfy the constraints`);
    out.push({ name, tableOffset, tableSize, flags, type, granularityBits });
    pos += entrySize;
  }
  if (out.length !== nbBitmaps) {
    throw new CorruptImageError('Less bitmaps found than specified in header extension');
  }
  return out;
}

/** qemu-img info's flag names, in QEMU's order. */
export function bitmapFlagNames(flags: number): ('in-use' | 'auto')[] {
  const names: ('in-use' | 'auto')[] = [];
  if (flags & BME_FLAG_IN_USE) names.push('in-use');
  if (flags & BME_FLAG_AUTO) names.push('auto');
  return names;
}
