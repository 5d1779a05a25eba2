// L2 table entries (qcow2.rst "Cluster mapping", "Extended L2 Entries"). Entries are kept as two
// 32-bit halves so the hot read path never allocates BigInts; `hi` holds bits 32-63.
// Classification mirrors QEMU's qcow2_get_cluster_type() / qcow2_get_subcluster_type().

import { readU32BE, writeU32BE } from '../core/index.js';
import type { Layout } from './layout.js';

export interface L2Entry {
  hi: number;
  lo: number;
  /** Extended L2 only: bits 32-63 of the bitmap ("reads as zero" per subcluster). */
  zeroBits: number;
  /** Extended L2 only: bits 0-31 of the bitmap ("allocated" per subcluster). */
  allocBits: number;
}

export const COPIED_HI = 0x8000_0000;
export const COMPRESSED_HI = 0x4000_0000;
const OFFSET_HI_MASK = 0x00ff_ffff;
const OFFSET_LO_MASK = 0xffff_fe00;

export type ClusterType = 'unallocated' | 'zero-plain' | 'zero-alloc' | 'normal' | 'compressed';

export type SubclusterType =
  | 'unallocated-plain'
  | 'unallocated-alloc'
  | 'zero-plain'
  | 'zero-alloc'
  | 'normal'
  | 'compressed'
  | 'invalid';

export function readL2Entry(table: Uint8Array, index: number, layout: Layout): L2Entry {
  const off = index * layout.l2EntrySize;
  const hi = readU32BE(table, off);
  const lo = readU32BE(table, off + 4);
  if (!layout.extendedL2) return { hi, lo, zeroBits: 0, allocBits: 0 };
  return { hi, lo, zeroBits: readU32BE(table, off + 8), allocBits: readU32BE(table, off + 12) };
}

export function writeL2Entry(table: Uint8Array, index: number, layout: Layout, e: L2Entry): void {
  const off = index * layout.l2EntrySize;
  writeU32BE(table, off, e.hi >>> 0);
  writeU32BE(table, off + 4, e.lo >>> 0);
  if (layout.extendedL2) {
    writeU32BE(table, off + 8, e.zeroBits >>> 0);
    writeU32BE(table, off + 12, e.allocBits >>> 0);
  }
}

/** Host cluster offset of a standard (non-compressed) entry: bits 9-55. */
export function entryOffset(e: { hi: number; lo: number }): number {
  return (e.hi & OFFSET_HI_MASK) * 0x1_0000_0000 + ((e.lo & OFFSET_LO_MASK) >>> 0);
}

export function isCopied(e: { hi: number }): boolean {
  return (e.hi & COPIED_HI) !== 0;
}

export function isCompressed(e: { hi: number }): boolean {
  return (e.hi & COMPRESSED_HI) !== 0;
}

/** Build a standard entry: host offset plus flags. */
export function makeEntry(
  hostOffset: number,
  flags: { copied?: boolean; zero?: boolean } = {},
  bitmap: { zeroBits?: number; allocBits?: number } = {},
): L2Entry {
  const hi = Math.floor(hostOffset / 0x1_0000_0000) | (flags.copied ? COPIED_HI : 0);
  const lo = ((hostOffset % 0x1_0000_0000) | (flags.zero ? 1 : 0)) >>> 0;
  return { hi: hi >>> 0, lo, zeroBits: bitmap.zeroBits ?? 0, allocBits: bitmap.allocBits ?? 0 };
}

export const EMPTY_ENTRY: Readonly<L2Entry> = Object.freeze({
  hi: 0,
  lo: 0,
  zeroBits: 0,
  allocBits: 0,
});

export function clusterType(e: L2Entry, layout: Layout, hasDataFile: boolean): ClusterType {
  if (isCompressed(e)) return 'compressed';
  if ((e.lo & 1) !== 0 && !layout.extendedL2) {
    return entryOffset(e) !== 0 ? 'zero-alloc' : 'zero-plain';
  }
  if (entryOffset(e) === 0) {
    // Offset 0 is a valid data offset in an external data file; COPIED disambiguates.
    return hasDataFile && isCopied(e) ? 'normal' : 'unallocated';
  }
  return 'normal';
}

export function subclusterType(
  e: L2Entry,
  type: ClusterType,
  layout: Layout,
  scIndex: number,
): SubclusterType {
  if (!layout.extendedL2) {
    switch (type) {
      case 'compressed':
        return 'compressed';
      case 'zero-plain':
        return 'zero-plain';
      case 'zero-alloc':
        return 'zero-alloc';
      case 'normal':
        return 'normal';
      case 'unallocated':
        return 'unallocated-plain';
    }
  }
  const bit = 2 ** scIndex;
  const zero = (e.zeroBits & bit) !== 0;
  const alloc = (e.allocBits & bit) !== 0;
  switch (type) {
    case 'compressed':
      return 'compressed';
    case 'normal':
      if ((e.zeroBits & e.allocBits) !== 0) return 'invalid';
      if (zero) return 'zero-alloc';
      if (alloc) return 'normal';
      return 'unallocated-alloc';
    case 'unallocated':
      if (e.allocBits !== 0) return 'invalid';
      if (zero) return 'zero-plain';
      return 'unallocated-plain';
    default:
      return 'invalid';
  }
}

/**
 * Compressed cluster descriptor (qcow2.rst "Compressed Clusters Descriptor"):
 * host byte offset in bits 0..x-1, additional 512-byte sectors in bits x..61.
 * Returns QEMU's (offset, size) where size = (nb_sectors+1)*512 - (offset & 511).
 */
export function compressedLocation(e: L2Entry, layout: Layout): { offset: number; size: number } {
  const desc = (BigInt(e.hi & 0x3fff_ffff) << 32n) | BigInt(e.lo >>> 0);
  const shift = BigInt(layout.csizeShift);
  const offset = Number(desc & ((1n << shift) - 1n));
  const nbSectors = Number((desc >> shift) & BigInt(layout.csizeMask));
  const size = (nbSectors + 1) * 512 - (offset & 511);
  return { offset, size };
}

/** Build a compressed descriptor for data at `offset` of `size` bytes. */
export function makeCompressedEntry(offset: number, size: number, layout: Layout): L2Entry {
  // nb_csectors = last sector index - first sector index (QEMU qcow2_alloc_compressed_cluster_offset)
  const nbSectors = Math.floor((offset + size - 1) / 512) - Math.floor(offset / 512);
  const desc = (BigInt(nbSectors) << BigInt(layout.csizeShift)) | BigInt(offset) | (1n << 62n);
  return {
    hi: Number(desc >> 32n) >>> 0,
    lo: Number(desc & 0xffff_ffffn) >>> 0,
    zeroBits: 0,
    allocBits: 0,
  };
}

/** Mask with bits [from, to) set, for subcluster bitmaps (to <= 32). */
export function bitRange(from: number, to: number): number {
  if (to <= from) return 0;
  const width = to - from;
  const ones = width >= 32 ? 0xffff_ffff : 2 ** width - 1;
  return (ones * 2 ** from) >>> 0;
}
