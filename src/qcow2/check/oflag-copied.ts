// check_oflag_copied(): QCOW_OFLAG_COPIED must be set exactly on the active L1 and L2 entries
// whose cluster has refcount 1 (qcow2.rst "Cluster mapping"). Runs after the refcounts were
// compared (and repaired), so the refcounts it reads are the repaired ones.

import { readU32BE, writeU32BE } from '../../core/index.js';
import { OL_ACTIVE_L1, OL_ACTIVE_L2, type CheckContext } from './context.js';
import {
  CheckAbort,
  FIX_ERRORS,
  FIX_LEAKS,
  strerror,
  type CheckCounts,
  type FixMode,
} from './types.js';
import { hex64 } from './u64.js';
import { getRefcount } from '../refcount.js';
import type { WorkBudget } from './accounting.js';

const COPIED_HI = 0x8000_0000;
const COMPRESSED_HI = 0x4000_0000;
const OFFSET_HI = 0x00ff_ffff;
const OFFSET_LO = 0xffff_fe00;

export async function checkOflagCopied(
  ctx: CheckContext,
  res: CheckCounts,
  fix: FixMode,
  budget: WorkBudget,
): Promise<void> {
  let repair: boolean;
  if (fix & FIX_ERRORS) repair = true;
  else if (fix & FIX_LEAKS) {
    // "Repair only if that seems safe": the refcounts were fixed just before.
    repair = !res.checkErrors && !res.corruptions && !res.leaks;
  } else repair = false;

  const layout = ctx.layout;
  const cs = ctx.clusterSize;
  const entrySize = layout.l2EntrySize;
  const ext = layout.extendedL2;
  const l1 = ctx.device.l1Raw();
  const l2 = new Uint8Array(cs);
  const refcounts = new RefcountReader(ctx);

  for (let i = 0; i < ctx.l1Size; i++) {
    const l1Hi = l1[2 * i]!;
    const l1Lo = l1[2 * i + 1]!;
    const l2Off = (l1Hi & OFFSET_HI) * 0x1_0000_0000 + ((l1Lo & OFFSET_LO) >>> 0);
    if (l2Off === 0) continue;

    const refcount = await refcountOrUndefined(ctx, l2Off);
    if (refcount !== undefined && (refcount === 1) !== ((l1Hi & COPIED_HI) !== 0)) {
      res.corruptions++;
      ctx.emit(
        `${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${hex64(l1Hi, l1Lo)} refcount=${refcount}`,
      );
      if (repair) {
        l1[2 * i] = (refcount === 1 ? l1Hi | COPIED_HI : l1Hi & ~COPIED_HI) >>> 0;
        ctx.device.setL1(l1);
        try {
          await writeL1Entry(ctx, i);
        } catch (err) {
          res.checkErrors++;
          throw err;
        }
        res.corruptions--;
        res.corruptionsFixed++;
      }
    }

    // Beyond the end of the file the table reads as zeros: no entries to check.
    if (l2Off >= ctx.fileLength) continue;
    budget.spend(ctx, res, cs);
    try {
      await ctx.readInto(l2, l2Off);
    } catch (err) {
      const errno = err instanceof CheckAbort ? err.errno : 'EIO';
      ctx.emit(`ERROR: Could not read L2 table: ${strerror(errno)}`);
      res.checkErrors++;
      throw err;
    }

    let dirty = 0;
    for (let j = 0; j < layout.l2Entries; j++) {
      const o = j * entrySize;
      const hi = readU32BE(l2, o);
      const lo = readU32BE(l2, o + 4);
      if (hi & COMPRESSED_HI) continue;
      const hasOffset = (hi & OFFSET_HI) !== 0 || (lo & OFFSET_LO) !== 0;
      const zeroFlag = !ext && (lo & 1) !== 0;
      // QCOW2_CLUSTER_NORMAL or QCOW2_CLUSTER_ZERO_ALLOC
      const allocated = zeroFlag
        ? hasOffset
        : hasOffset || (ctx.hasDataFile && (hi & COPIED_HI) !== 0);
      if (!allocated) continue;
      let rc: number | undefined;
      if (ctx.hasDataFile) rc = 1;
      else {
        const dataOff = (hi & OFFSET_HI) * 0x1_0000_0000 + ((lo & OFFSET_LO) >>> 0);
        rc = await refcounts.get(dataOff);
        if (rc === undefined) continue; // "don't print message nor increment check_errors"
      }
      if ((rc === 1) !== ((hi & COPIED_HI) !== 0)) {
        res.corruptions++;
        ctx.emit(
          `${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED data cluster: l2_entry=${hex64(hi, lo)} refcount=${rc}`,
        );
        if (repair) {
          writeU32BE(l2, o, (rc === 1 ? hi | COPIED_HI : hi & ~COPIED_HI) >>> 0);
          dirty++;
        }
      }
    }

    if (dirty > 0) {
      try {
        await ctx.preWriteOverlapCheck(OL_ACTIVE_L2, l2Off, cs);
      } catch (err) {
        const errno = err instanceof CheckAbort ? err.errno : 'EIO';
        ctx.emit(
          `ERROR: Could not write L2 table; metadata overlap check failed: ${strerror(errno)}`,
        );
        res.checkErrors++;
        throw err;
      }
      try {
        await ctx.writeAt(l2Off, l2);
      } catch (err) {
        const errno = err instanceof CheckAbort ? err.errno : 'EIO';
        ctx.emit(`ERROR: Could not write L2 table: ${strerror(errno)}`);
        res.checkErrors++;
        throw err;
      }
      res.corruptions -= dirty;
      res.corruptionsFixed += dirty;
    }
  }
}

/** qcow2_get_refcount() whose failure the caller ignores (it was reported earlier). */
async function refcountOrUndefined(ctx: CheckContext, offset: number): Promise<number | undefined> {
  try {
    return await ctx.getRefcount(Math.floor(offset / ctx.clusterSize));
  } catch (err) {
    if (err instanceof CheckAbort) return undefined;
    throw err;
  }
}

/**
 * Refcount lookups for one pass over the L2 tables, remembering the last refcount block
 * (nothing changes refcounts while COPIED flags are checked).
 */
class RefcountReader {
  readonly #ctx: CheckContext;
  #index = -1;
  #block: Uint8Array | undefined;

  constructor(ctx: CheckContext) {
    this.#ctx = ctx;
  }

  async get(offset: number): Promise<number | undefined> {
    const ctx = this.#ctx;
    const cluster = Math.floor(offset / ctx.clusterSize);
    const per = ctx.layout.refblockEntries;
    const ti = Math.floor(cluster / per);
    if (ti !== this.#index) {
      try {
        this.#block = await ctx.refblock(ti);
      } catch (err) {
        if (err instanceof CheckAbort) {
          this.#index = -1;
          return undefined;
        }
        throw err;
      }
      this.#index = ti;
    }
    return this.#block ? getRefcount(this.#block, cluster % per, ctx.layout.refcountOrder) : 0;
  }
}

/** qcow2_write_l1_entry() for a file with byte granularity: just the one entry. */
async function writeL1Entry(ctx: CheckContext, index: number): Promise<void> {
  const buf = new Uint8Array(8);
  writeU32BE(buf, 0, ctx.l1Hi(index));
  writeU32BE(buf, 4, ctx.l1Lo(index));
  const at = ctx.l1TableOffset + 8 * index;
  await ctx.preWriteOverlapCheck(OL_ACTIVE_L1, at, 8);
  await ctx.writeAt(at, buf, true);
}
