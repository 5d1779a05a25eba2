// qcow2_check_refcounts(): count every reference the metadata makes (calculate_refcounts),
// compare with the refcounts on disk, repair what the mode allows (fixing single refcounts, or
// rebuilding the whole refcount structure), then check the COPIED flags.

import { MAX_L1_SIZE_BYTES } from '../constants.js';
import { incRefcounts, WorkBudget } from './accounting.js';
import { checkBitmapsRefcounts } from './bitmaps.js';
import { compareRefcounts } from './compare.js';
import type { CheckContext } from './context.js';
import { Imrt } from './imrt.js';
import { CHECK_FRAG_INFO, checkRefcountsL1, type WalkState } from './l1-l2.js';
import { checkOflagCopied } from './oflag-copied.js';
import { rebuildRefcountStructure } from './rebuild.js';
import { checkRefblocks, type RebuildFlag } from './refblocks.js';
import { snapshotText } from './snapshots.js';
import {
  assignCounts,
  CheckAbort,
  copyCounts,
  emptyCounts,
  FIX_ERRORS,
  FIX_LEAKS,
  type CheckCounts,
  type FixMode,
} from './types.js';
import { altHex, fromBig } from './u64.js';

const INT_MAX = 2 ** 31 - 1;

/** calculate_refcounts(): fill the in-memory refcount table from all metadata. */
async function calculateRefcounts(
  ctx: CheckContext,
  res: CheckCounts,
  fix: FixMode,
  flag: RebuildFlag,
  imrt: Imrt,
  budget: WorkBudget,
): Promise<void> {
  const cs = ctx.clusterSize;
  const w: WalkState = { ctx, res, imrt, fix, budget, tablesInL1: 0 };

  incRefcounts(ctx, res, imrt, 0, cs); // header
  await checkRefcountsL1(w, ctx.l1TableOffset, ctx.l1Size, CHECK_FRAG_INFO, true);

  if (ctx.hasDataFile && ctx.nbSnapshots) {
    ctx.emit(`ERROR ${ctx.nbSnapshots} snapshots in image with data file`);
    res.corruptions++;
  }
  for (const sn of ctx.snapshots.slice(0, ctx.nbSnapshots)) {
    const what = `snapshot ${snapshotText(sn.id)} (${snapshotText(sn.name)})`;
    if (sn.l1TableOffset % BigInt(cs) !== 0n) {
      ctx.emit(
        `ERROR ${what} l1_offset=${altHex(sn.l1TableOffset)}: L1 table is not cluster aligned; snapshot table entry corrupted`,
      );
      res.corruptions++;
      continue;
    }
    if (sn.l1Size > MAX_L1_SIZE_BYTES / 8) {
      ctx.emit(
        `ERROR ${what} l1_size=${altHex(sn.l1Size)}: L1 table is too large; snapshot table entry corrupted`,
      );
      res.corruptions++;
      continue;
    }
    await checkRefcountsL1(w, fromBig(sn.l1TableOffset), sn.l1Size, 0, false);
  }
  incRefcounts(ctx, res, imrt, fromBig(ctx.snapshotsOffset), ctx.snapshotsSize);

  // refcount data
  incRefcounts(ctx, res, imrt, ctx.reftableOffset, ctx.reftable.length * 8);

  // encryption
  const crypto = ctx.device.header.cryptoHeader;
  if (crypto && crypto.length) incRefcounts(ctx, res, imrt, crypto.offset, crypto.length);

  await checkBitmapsRefcounts(ctx, res, imrt, budget);
  await checkRefblocks(ctx, res, fix, flag, imrt);
}

/** qcow2_check_refcounts(). Throws CheckAbort when the check fails (QEMU returns -errno). */
export async function checkRefcounts(
  ctx: CheckContext,
  res: CheckCounts,
  fix: FixMode,
): Promise<void> {
  const cs = ctx.clusterSize;
  const nbClusters = Math.ceil(ctx.fileLength / cs);
  if (nbClusters > INT_MAX) {
    res.checkErrors++;
    throw new CheckAbort('EFBIG');
  }
  const h = ctx.device.header;
  res.bfi.totalClusters = Math.ceil((Math.floor(h.size / 512) * 512) / cs);

  const imrt = new Imrt(ctx.layout, nbClusters);
  const flag: RebuildFlag = { rebuild: false };
  const budget = new WorkBudget(ctx.fileLength, cs);
  await calculateRefcounts(ctx, res, fix, flag, imrt, budget);

  // "In case we don't need to rebuild the refcount structure (but want to fix something), this
  // function is immediately called again, in which case the result should be ignored"
  const preCompare = copyCounts(res);
  let highest = await compareRefcounts(ctx, res, 0, flag, imrt);

  if (flag.rebuild && fix & FIX_ERRORS) {
    const old = copyCounts(res);
    let freshLeaks = 0;
    ctx.emit('Rebuilding refcount structure');
    try {
      await rebuildRefcountStructure(ctx, res, imrt);
    } catch (err) {
      if (err instanceof CheckAbort) ctx.report(err.message);
      throw err;
    }
    res.corruptions = 0;
    res.leaks = 0;
    // The old reftable was exchanged for a new one: count the references again.
    flag.rebuild = false;
    imrt.clear();
    await calculateRefcounts(ctx, res, 0, flag, imrt, budget);

    if (fix & FIX_LEAKS) {
      // The old refcount structures are now leaked; fix that. Only leaks the rebuild itself
      // introduced and could not fix are kept from this pass.
      const saved = copyCounts(res);
      assignCounts(res, emptyCounts());
      highest = await compareRefcounts(ctx, res, FIX_LEAKS, flag, imrt);
      if (flag.rebuild) ctx.emit('ERROR rebuilt refcount structure is still broken');
      freshLeaks = res.leaks;
      assignCounts(res, saved);
    }
    if (res.corruptions < old.corruptions)
      res.corruptionsFixed += old.corruptions - res.corruptions;
    if (res.leaks < old.leaks) res.leaksFixed += old.leaks - res.leaks;
    res.leaks += freshLeaks;
  } else if (fix) {
    if (flag.rebuild) {
      ctx.emit('ERROR need to rebuild refcount structures');
      res.checkErrors++;
      throw new CheckAbort('EIO');
    }
    if (res.leaks || res.corruptions) {
      assignCounts(res, preCompare);
      highest = await compareRefcounts(ctx, res, fix, flag, imrt);
    }
  }

  await checkOflagCopied(ctx, res, fix, budget);
  res.imageEndOffset = (highest + 1) * cs;
}
