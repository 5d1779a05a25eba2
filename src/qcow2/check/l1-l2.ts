// Walking L1 and L2 tables: check_refcounts_l1(), check_refcounts_l2() and
// fix_l2_entry_by_zero() of QEMU 7.2's qcow2-refcount.c. Every L2 entry is validated
// (reserved bits, alignment, subcluster bitmaps, compressed descriptors) and counted into the
// in-memory refcount table; the active L1 also feeds the allocation/fragmentation statistics.

import { readU32BE, writeU32BE } from '../../core/index.js';
import { incRefcounts, type WorkBudget } from './accounting.js';
import { OL_ACTIVE_L2, OL_INACTIVE_L2, type CheckContext } from './context.js';
import type { Imrt } from './imrt.js';
import { CheckAbort, FIX_ERRORS, strerror, type CheckCounts, type FixMode } from './types.js';
import { hex, hex64, u64 } from './u64.js';

/** Flags for checkRefcountsL1/L2: update the BlockFragInfo counters (active L1 only). */
export const CHECK_FRAG_INFO = 0x2;

const COPIED_HI = 0x8000_0000;
const COMPRESSED_HI = 0x4000_0000;
/** L2E_STD_RESERVED_MASK 0x3f000000000001fe, as halves. */
const L2E_RESERVED_HI = 0x3f00_0000;
const L2E_RESERVED_LO = 0x1fe;
/** L1E_RESERVED_MASK 0x7f000000000001ff. */
const L1E_RESERVED_HI = 0x7f00_0000;
const L1E_RESERVED_LO = 0x1ff;
const OFFSET_HI = 0x00ff_ffff;
const OFFSET_LO = 0xffff_fe00;

export interface WalkState {
  ctx: CheckContext;
  res: CheckCounts;
  imrt: Imrt;
  fix: FixMode;
  budget: WorkBudget;
  /** L2 tables inside the file visited for the current L1 table. */
  tablesInL1: number;
}

/** Whether a table starts at or beyond the end of the file (it then reads as zeros). */
export function beyondEof(ctx: CheckContext, offset: number | bigint): boolean {
  return typeof offset === 'bigint' || offset >= ctx.fileLength;
}

/**
 * check_refcounts_l1(): count the L1 table, its L2 tables and every cluster they reference.
 * Throws CheckAbort when the check cannot go on (QEMU returns -errno).
 */
export async function checkRefcountsL1(
  w: WalkState,
  l1TableOffset: number | bigint,
  l1Size: number,
  flags: number,
  active: boolean,
): Promise<void> {
  const { ctx, res } = w;
  if (!l1Size) return;
  incRefcounts(ctx, res, w.imrt, l1TableOffset, l1Size * 8);
  // A table entirely beyond the end of the file reads as zeros: nothing to walk (requests QEMU
  // cannot make still fail the same way).
  const zeros = beyondEof(ctx, l1TableOffset);
  if (!zeros) w.budget.spend(ctx, res, l1Size * 8);
  let l1: Uint8Array = new Uint8Array(0);
  try {
    if (zeros) ctx.assertReadable(l1TableOffset, l1Size * 8);
    else l1 = await ctx.readAt(l1TableOffset, l1Size * 8);
  } catch (err) {
    ctx.emit('ERROR: I/O error in check_refcounts_l1');
    res.checkErrors++;
    throw err;
  }
  if (zeros) return;
  const cs = ctx.clusterSize;
  w.tablesInL1 = 0;
  for (let i = 0; i < l1Size; i++) {
    const hi = readU32BE(l1, 8 * i);
    const lo = readU32BE(l1, 8 * i + 4);
    if (hi === 0 && lo === 0) continue;
    if (hi & L1E_RESERVED_HI || lo & L1E_RESERVED_LO) {
      ctx.emit(`ERROR found L1 entry with reserved bits set: ${hex64(hi, lo)}`);
      res.corruptions++;
    }
    const l2Offset = u64(hi & OFFSET_HI, (lo & OFFSET_LO) >>> 0);
    incRefcounts(ctx, res, w.imrt, l2Offset, cs);
    if (((lo & OFFSET_LO) >>> 0) % cs !== 0) {
      ctx.emit(
        `ERROR l2_offset=${hex(l2Offset)}: Table is not cluster aligned; L1 entry corrupted`,
      );
      res.corruptions++;
    }
    await checkRefcountsL2(w, l2Offset, flags, active);
  }
}

/** check_refcounts_l2(). */
async function checkRefcountsL2(
  w: WalkState,
  l2Offset: number | bigint,
  flags: number,
  active: boolean,
): Promise<void> {
  const { ctx, res, imrt } = w;
  const layout = ctx.layout;
  const cs = ctx.clusterSize;
  const entrySize = layout.l2EntrySize;
  const ext = layout.extendedL2;
  // A table beyond the end of the file reads as zeros: all entries unallocated, nothing to do.
  if (beyondEof(ctx, l2Offset)) return;
  if (++w.tablesInL1 > w.budget.maxTablesPerL1) w.budget.abort(ctx, res);
  w.budget.spend(ctx, res, cs);
  let table: Uint8Array;
  try {
    table = await ctx.readAt(l2Offset, cs);
  } catch (err) {
    ctx.emit('ERROR: I/O error in check_refcounts_l2');
    res.checkErrors++;
    throw err;
  }
  const frag = (flags & CHECK_FRAG_INFO) !== 0;
  const hasDataFile = ctx.hasDataFile;
  // Compressed descriptors: host offset in bits 0..csize_shift-1, then the sector count.
  const csizeShift = layout.csizeShift;
  const coffHiBits = csizeShift - 32;
  const coffHiMask = 2 ** coffHiBits - 1;
  let nextContiguous = 0;

  for (let i = 0; i < layout.l2Entries; i++) {
    const o = i * entrySize;
    let hi = readU32BE(table, o);
    const lo = readU32BE(table, o + 4);
    const zeroBits = ext ? readU32BE(table, o + 8) : 0;
    const allocBits = ext ? readU32BE(table, o + 12) : 0;
    const compressed = (hi & COMPRESSED_HI) !== 0;

    if (!compressed && (hi & L2E_RESERVED_HI || lo & L2E_RESERVED_LO)) {
      ctx.emit(`ERROR found l2 entry with reserved bits set: ${hex64(hi, lo)}`);
      res.corruptions++;
    }

    if (compressed) {
      const coffHi = hi & coffHiMask;
      if (hi & COPIED_HI) {
        ctx.emit(
          `ERROR: coffset=0x${hex64(coffHi, lo)}: copied flag must never be set for compressed clusters`,
        );
        hi = (hi & ~COPIED_HI) >>> 0;
        res.corruptions++;
      }
      if (hasDataFile) {
        ctx.emit(`ERROR compressed cluster ${i} with data file, entry=0x${hex64(hi, lo)}`);
        res.corruptions++;
        continue;
      }
      if (zeroBits || allocBits) {
        ctx.emit(
          `ERROR compressed cluster ${i} with non-zero subcluster allocation bitmap, entry=0x${hex64(hi, lo)}`,
        );
        res.corruptions++;
        continue;
      }
      // qcow2_parse_compressed_l2_entry()
      const coffset = u64(coffHi, lo);
      const sectors = ((hi >>> coffHiBits) & layout.csizeMask) + 1;
      const csize = sectors * 512 - (lo & 511);
      incRefcounts(ctx, res, imrt, coffset, csize);
      if (frag) {
        res.bfi.allocatedClusters++;
        res.bfi.compressedClusters++;
        // "Compressed clusters are fragmented by nature."
        res.bfi.fragmentedClusters++;
      }
      continue;
    }

    const offHi = hi & OFFSET_HI;
    const offLo = (lo & OFFSET_LO) >>> 0;
    const zeroFlag = !ext && (lo & 1) !== 0;
    const hasOffset = offHi !== 0 || offLo !== 0;
    let type: 'zero-plain' | 'allocated' | 'unallocated';
    if (zeroFlag) type = hasOffset ? 'allocated' : 'zero-plain';
    else if (!hasOffset) type = hasDataFile && hi & COPIED_HI ? 'allocated' : 'unallocated';
    else type = 'allocated';

    if (type === 'unallocated') {
      if (allocBits) {
        res.corruptions++;
        ctx.emit('ERROR: Unallocated cluster has non-zero subcluster allocation map');
      }
      continue;
    }
    if (type === 'zero-plain') continue; // impossible with subclusters

    // QCOW2_CLUSTER_NORMAL / QCOW2_CLUSTER_ZERO_ALLOC
    const offset = u64(offHi, offLo);
    if ((zeroBits & allocBits) !== 0) {
      res.corruptions++;
      ctx.emit(
        `ERROR offset=${hex(offset)}: Allocated cluster has corrupted subcluster allocation bitmap`,
      );
    }
    if (offLo % cs !== 0) {
      res.corruptions++;
      const containsData = ext ? allocBits !== 0 : !zeroFlag;
      if (!containsData) {
        const repair = (w.fix & FIX_ERRORS) !== 0;
        ctx.emit(
          `${repair ? 'Repairing' : 'ERROR'} offset=${hex(offset)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`,
        );
        if (repair) {
          const fixed = await fixL2EntryByZero(w, l2Offset, table, i, active);
          if (fixed) continue; // the cluster is unused now
        }
      } else {
        ctx.emit(
          `ERROR offset=${hex(offset)}: Data cluster is not properly aligned; L2 entry corrupted.`,
        );
      }
    }
    if (frag) {
      res.bfi.allocatedClusters++;
      const off = Number(offset);
      if (nextContiguous && off !== nextContiguous) res.bfi.fragmentedClusters++;
      nextContiguous = off + cs;
    }
    if (!hasDataFile) incRefcounts(ctx, res, imrt, offset, cs);
  }
}

/**
 * fix_l2_entry_by_zero(): turn the entry into a plain zero cluster (or make its allocated
 * subclusters zero) and write it back. Returns true when fixed; throws when the write would
 * have hit metadata (the caller then abandons the table, as QEMU does).
 */
async function fixL2EntryByZero(
  w: WalkState,
  l2Offset: number | bigint,
  table: Uint8Array,
  index: number,
  active: boolean,
): Promise<boolean> {
  const { ctx, res } = w;
  const layout = ctx.layout;
  const entrySize = layout.l2EntrySize;
  const o = index * entrySize;
  if (layout.extendedL2) {
    const zeroBits = readU32BE(table, o + 8);
    const allocBits = readU32BE(table, o + 12);
    writeU32BE(table, o, 0);
    writeU32BE(table, o + 4, 0);
    writeU32BE(table, o + 8, (zeroBits | allocBits) >>> 0);
    writeU32BE(table, o + 12, 0);
  } else {
    writeU32BE(table, o, 0);
    writeU32BE(table, o + 4, 1); // QCOW_OFLAG_ZERO
  }
  const entryOffset = typeof l2Offset === 'number' ? l2Offset + o : undefined;
  try {
    if (entryOffset !== undefined) {
      await ctx.preWriteOverlapCheck(
        active ? OL_ACTIVE_L2 : OL_INACTIVE_L2,
        entryOffset,
        entrySize,
      );
    }
  } catch (err) {
    ctx.emit('ERROR: Overlap check failed');
    res.checkErrors++;
    throw err;
  }
  try {
    if (entryOffset === undefined) throw new CheckAbort('EFBIG');
    await ctx.writeAt(entryOffset, table.subarray(o, o + entrySize), true);
  } catch (err) {
    const errno = err instanceof CheckAbort ? err.errno : 'EIO';
    ctx.emit(`ERROR: Failed to overwrite L2 table entry: ${strerror(errno)}`);
    res.checkErrors++;
    return false;
  }
  res.corruptions--;
  res.corruptionsFixed++;
  return true;
}
