// Bitmap tables (qcow2.rst "Bitmap table"): one 64-bit entry per cluster of serialized bitmap
// data. Bits 9-55 hold the host offset of a data cluster; with offset 0, bit 0 says whether the
// whole cluster reads as ones (set) or zeros (clear). Bits 1-8 and 56-63 are reserved.
// Decoding validates like QEMU's check_table_entry().
//
// In memory a table is a number[]: 0 = all zeros, 1 = all ones, anything else = the host offset
// of a data cluster (always a non-zero multiple of the cluster size, so 1 is unambiguous).

import { readU32BE, writeU32BE } from '../../core/index.js';

export const TABLE_ENTRY_ZEROS = 0;
export const TABLE_ENTRY_ONES = 1;
export const TABLE_ENTRY_SIZE = 8;

// BME_TABLE_ENTRY_RESERVED_MASK 0xff000000000001fe and the offset mask, as 32-bit halves.
const RESERVED_HI = 0xff00_0000;
const RESERVED_LO = 0x1fe;
const OFFSET_HI = 0x00ff_ffff;
const OFFSET_LO = 0xffff_fe00;
const TWO_32 = 0x1_0000_0000;

/**
 * Decode `size` entries; undefined if one of them is invalid (QEMU: -EINVAL) — reserved bits set,
 * an offset with bit 0 set, or an offset that is not cluster aligned.
 */
export function decodeBitmapTable(
  bytes: Uint8Array,
  size: number,
  clusterSize: number,
): number[] | undefined {
  const out = new Array<number>(size);
  for (let i = 0; i < size; i++) {
    const hi = readU32BE(bytes, 8 * i);
    const lo = readU32BE(bytes, 8 * i + 4);
    if (hi & RESERVED_HI || lo & RESERVED_LO) return undefined;
    const offset = (hi & OFFSET_HI) * TWO_32 + ((lo & OFFSET_LO) >>> 0);
    if (offset !== 0) {
      if (lo & 1 || offset % clusterSize !== 0) return undefined;
      out[i] = offset;
    } else {
      out[i] = lo & 1 ? TABLE_ENTRY_ONES : TABLE_ENTRY_ZEROS;
    }
  }
  return out;
}

export function encodeBitmapTable(table: readonly number[]): Uint8Array {
  const out = new Uint8Array(table.length * TABLE_ENTRY_SIZE);
  for (let i = 0; i < table.length; i++) {
    const e = table[i]!;
    writeU32BE(out, 8 * i, Math.floor(e / TWO_32));
    writeU32BE(out, 8 * i + 4, e % TWO_32);
  }
  return out;
}

/** Host offset of a data cluster entry, or 0 for the all-zeros / all-ones entries. */
export function dataClusterOffset(entry: number): number {
  return entry === TABLE_ENTRY_ONES ? 0 : entry;
}
