// compare_refcounts(): the refcount each cluster has on disk against the number of references
// the metadata walk found. Too high is a leak, too low a corruption, zero on disk for a used
// cluster asks for a rebuild. With -r, mismatches are repaired through the refcount cache.

import { getRefcount } from '../refcount.js';
import type { CheckContext } from './context.js';
import type { Imrt } from './imrt.js';
import type { RebuildFlag } from './refblocks.js';
import {
  CheckAbort,
  FIX_ERRORS,
  FIX_LEAKS,
  strerror,
  type CheckCounts,
  type FixMode,
} from './types.js';

/** Returns highest_cluster: the last cluster with a refcount or a reference. */
export async function compareRefcounts(
  ctx: CheckContext,
  res: CheckCounts,
  fix: FixMode,
  flag: RebuildFlag,
  imrt: Imrt,
): Promise<number> {
  let highest = 0;
  const per = ctx.layout.refblockEntries;
  const order = ctx.layout.refcountOrder;
  const nbClusters = imrt.size;
  for (let first = 0; first < nbClusters; first += per) {
    const ti = first / per;
    const end = Math.min(nbClusters, first + per);
    let block: Uint8Array | undefined;
    let blockError: CheckAbort | undefined;
    try {
      block = await ctx.refblock(ti);
    } catch (err) {
      if (!(err instanceof CheckAbort)) throw err;
      blockError = err;
    }
    // Nothing on disk and nothing referenced: every refcount in this block's range is 0 = 0.
    if (!block && !blockError && !imrt.hasPage(ti)) continue;

    for (let i = first; i < end; i++) {
      if (blockError) {
        // qcow2_get_refcount() fails for every cluster of this block (and signals each time).
        try {
          await ctx.refblock(ti);
        } catch (err) {
          if (!(err instanceof CheckAbort)) throw err;
          blockError = err;
        }
        ctx.emit(`Can't get refcount for cluster ${i}: ${strerror(blockError.errno)}`);
        res.checkErrors++;
        continue;
      }
      const refcount1 = block ? getRefcount(block, i - first, order) : 0;
      const refcount2 = imrt.get(i);
      if (refcount1 > 0 || refcount2 > 0) highest = i;
      if (refcount1 === refcount2) continue;

      let fixed: 'leaks' | 'corruptions' | undefined;
      if (refcount1 === 0) flag.rebuild = true;
      else if (refcount1 > refcount2 && fix & FIX_LEAKS) fixed = 'leaks';
      else if (refcount1 < refcount2 && fix & FIX_ERRORS) fixed = 'corruptions';

      const shown =
        order === 6 && refcount1 > Number.MAX_SAFE_INTEGER
          ? (await ctx.getRefcountExact(i)).toString()
          : String(refcount1);
      const what = fixed ? 'Repairing' : refcount1 < refcount2 ? 'ERROR' : 'Leaked';
      ctx.emit(`${what} cluster ${i} refcount=${shown} reference=${refcount2}`);

      if (fixed) {
        try {
          // update_refcount(bs, i << cluster_bits, 1, |diff|, refcount1 > refcount2, ...)
          await ctx.device.refcounts.update(i * ctx.clusterSize, 1, refcount2 - refcount1);
          // QCOW2_DISCARD_ALWAYS: a cluster whose refcount drops to 0 is discarded in the file.
          if (refcount2 === 0) await ctx.discard(i * ctx.clusterSize, ctx.clusterSize);
          if (fixed === 'leaks') res.leaksFixed++;
          else res.corruptionsFixed++;
          // The cache may have handed out a fresh copy of the block.
          block = await ctx.refblock(ti);
          continue;
        } catch {
          /* counted below, as QEMU does when update_refcount() fails */
        }
      }
      if (refcount1 < refcount2) res.corruptions++;
      else res.leaks++;
    }
  }
  return highest;
}
