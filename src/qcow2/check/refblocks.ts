// check_refblocks(): validate every refcount table entry and count the refcount blocks.
// A refblock beyond the end of the file is "repaired" (-r all) by growing the file over it, as
// QEMU does; anything else that is wrong with the refcount structures asks for a rebuild.

import { incRefcounts } from './accounting.js';
import { INT64_MAX, type CheckContext } from './context.js';
import type { Imrt } from './imrt.js';
import { CheckAbort, FIX_ERRORS, strerror, type CheckCounts, type FixMode } from './types.js';

export interface RebuildFlag {
  rebuild: boolean;
}

export async function checkRefblocks(
  ctx: CheckContext,
  res: CheckCounts,
  fix: FixMode,
  flag: RebuildFlag,
  imrt: Imrt,
): Promise<void> {
  const cs = BigInt(ctx.clusterSize);
  const bits = BigInt(ctx.clusterBits);
  for (let i = 0; i < ctx.reftable.length; i++) {
    const offset = ctx.reftableEntryOffset(i);
    const cluster = offset >> bits;

    if (ctx.reftableEntryReserved(i)) {
      ctx.emit(`ERROR refcount table entry ${i} has reserved bits set`);
      res.corruptions++;
      flag.rebuild = true;
      continue;
    }
    if (offset % cs !== 0n) {
      ctx.emit(`ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
      res.corruptions++;
      flag.rebuild = true;
      continue;
    }
    if (cluster >= BigInt(imrt.size)) {
      res.corruptions++;
      const repair = (fix & FIX_ERRORS) !== 0;
      ctx.emit(`${repair ? 'Repairing' : 'ERROR'} refcount block ${i} is outside image`);
      if (repair) {
        const failure = await growOver(ctx, res, imrt, offset, cluster);
        if (failure === undefined) continue;
        flag.rebuild = true;
        ctx.emit(`ERROR could not resize image: ${strerror(failure)}`);
      }
      continue;
    }
    if (offset !== 0n) {
      const off = Number(offset);
      incRefcounts(ctx, res, imrt, off, ctx.clusterSize);
      const refcount = imrt.get(Number(cluster));
      if (refcount !== 1) {
        ctx.emit(`ERROR refcount block ${i} refcount=${refcount}`);
        res.corruptions++;
        flag.rebuild = true;
      }
    }
  }
}

/**
 * Grow the image file so that a refblock beyond its end lies inside it (the refblock then reads
 * as zeros, i.e. an empty refblock). Returns the errno when that is impossible.
 */
async function growOver(
  ctx: CheckContext,
  res: CheckCounts,
  imrt: Imrt,
  offset: bigint,
  cluster: bigint,
): Promise<CheckAbort['errno'] | undefined> {
  const cs = BigInt(ctx.clusterSize);
  if (offset > INT64_MAX - cs) return 'EINVAL';
  try {
    await ctx.truncate(offset + cs);
  } catch (err) {
    if (!(err instanceof CheckAbort)) throw err;
    ctx.report(err.message);
    return err.errno;
  }
  const newClusters = Math.ceil(ctx.fileLength / ctx.clusterSize);
  try {
    imrt.resize(newClusters);
  } catch (err) {
    res.checkErrors++;
    throw err;
  }
  if (cluster >= BigInt(imrt.size)) return 'EINVAL';
  res.corruptions--;
  res.corruptionsFixed++;
  // The new area reads as zeros, so its refcount can only be exactly 1 now.
  incRefcounts(ctx, res, imrt, Number(offset), ctx.clusterSize);
  return undefined;
}
