// rebuild_refcount_structure(): when the on-disk refcounts cannot be trusted (a used cluster
// with refcount 0, a broken refcount table entry), write completely new refcount blocks and a
// new refcount table from the in-memory refcount table, allocating their clusters in it, and
// point the header at them. The old structures are leaked and cleaned up by the caller.
// Placement follows QEMU 7.2 exactly (refblocks first, then the reftable in the first gap),
// so the clusters the repair reports and the resulting layout match qemu-img's.

import { CheckAbort, strerror, type CheckCounts } from './types.js';
import type { CheckContext } from './context.js';
import type { Imrt } from './imrt.js';

/**
 * alloc_clusters_imrt(): find `count` contiguous free clusters from `firstFree.value` on,
 * growing the table at its end if needed, and mark them used. Returns the host offset.
 */
export function allocClustersImrt(
  ctx: CheckContext,
  imrt: Imrt,
  count: number,
  firstFree: { value: number },
): number {
  let cluster = firstFree.value;
  let firstGap = true;
  let contiguous = 0;
  for (; cluster < imrt.size && contiguous < count; cluster++) {
    if (!imrt.get(cluster)) {
      contiguous++;
      if (firstGap) {
        firstFree.value = cluster;
        firstGap = false;
      }
    } else if (contiguous) {
      contiguous = 0;
    }
  }
  if (contiguous < count) imrt.resize(cluster + count - contiguous);
  cluster -= contiguous;
  for (let i = 0; i < count; i++) imrt.set(cluster + i, 1);
  return cluster * ctx.clusterSize;
}

interface OnDiskReftable {
  entries: number[];
}

/**
 * rebuild_refcounts_write_refblocks(): write the refblock of every refblock-sized range in
 * [first, end) that has a used cluster, allocating refblocks not yet in `reftable`.
 * Returns whether the reftable had to grow.
 */
async function writeRefblocks(
  ctx: CheckContext,
  imrt: Imrt,
  first: number,
  end: number,
  reftable: OnDiskReftable,
): Promise<boolean> {
  const per = imrt.perPage;
  const cs = ctx.clusterSize;
  const firstFree = { value: 0 };
  let grown = false;
  for (let cluster = first; cluster < end; cluster++) {
    const index = Math.floor(cluster / per);
    if (!imrt.hasPage(index)) {
      cluster = (index + 1) * per - 1; // an all-zero refblock range
      continue;
    }
    if (!imrt.get(cluster)) continue;
    const start = index * per;
    let offset: number;
    if (reftable.entries.length > index && reftable.entries[index]) {
      offset = reftable.entries[index]!;
    } else {
      // Don't allocate a cluster in a refblock already written to disk.
      if (firstFree.value < start) firstFree.value = start;
      try {
        offset = allocClustersImrt(ctx, imrt, 1, firstFree);
      } catch (err) {
        throw failure(err, 'ERROR allocating refblock');
      }
      const rbCluster = offset / cs;
      if (rbCluster >= end) end = rbCluster + 1; // its own refcount must be written too
      if (reftable.entries.length <= index) {
        const n = Math.ceil(((index + 1) * 8) / cs) * (cs / 8);
        while (reftable.entries.length < n) reftable.entries.push(0);
        grown = true;
      }
      reftable.entries[index] = offset;
    }
    try {
      await ctx.preWriteOverlapCheck(0, offset, cs);
      await ctx.writeAt(offset, imrt.encodePage(index));
    } catch (err) {
      throw failure(err, 'ERROR writing refblock');
    }
    cluster = start + per - 1;
  }
  return grown;
}

/** An error_setg_errno()-style failure: "<what>: <strerror>". */
function failure(err: unknown, what: string): CheckAbort {
  const errno = err instanceof CheckAbort ? err.errno : 'EIO';
  return new CheckAbort(errno, `${what}: ${strerror(errno)}`);
}

/**
 * Rebuild the refcount structures. On failure throws a CheckAbort whose message QEMU prints
 * with error_report_err(); check_errors is counted here where QEMU counts it.
 */
export async function rebuildRefcountStructure(
  ctx: CheckContext,
  res: CheckCounts,
  imrt: Imrt,
): Promise<void> {
  const cs = ctx.clusterSize;
  const device = ctx.device;
  // qcow2_cache_empty(refcount_block_cache): write back, then forget every cached refblock.
  await device.refcounts.cache.flush().catch(() => undefined);
  device.refcounts.cache.clear();

  const reftable: OnDiskReftable = { entries: [] };
  try {
    await writeRefblocks(ctx, imrt, 0, imrt.size, reftable);
  } catch (err) {
    res.checkErrors++;
    throw err;
  }

  let reftableOffset: number;
  let reftableClusters: number;
  let changed: boolean;
  do {
    const firstFree = { value: 0 };
    reftableClusters = Math.ceil((reftable.entries.length * 8) / cs);
    try {
      reftableOffset = allocClustersImrt(ctx, imrt, reftableClusters, firstFree);
    } catch (err) {
      res.checkErrors++;
      throw failure(err, 'ERROR allocating reftable');
    }
    const startCluster = reftableOffset / cs;
    try {
      changed = await writeRefblocks(
        ctx,
        imrt,
        startCluster,
        startCluster + reftableClusters,
        reftable,
      );
    } catch (err) {
      res.checkErrors++;
      throw err;
    }
  } while (changed);

  const length = reftable.entries.length * 8;
  const buf = new Uint8Array(length);
  const view = new DataView(buf.buffer);
  reftable.entries.forEach((e, i) => view.setBigUint64(i * 8, BigInt(e)));
  try {
    await ctx.preWriteOverlapCheck(0, reftableOffset, length);
    await ctx.writeAt(reftableOffset, buf);
  } catch (err) {
    throw failure(err, 'ERROR writing reftable');
  }

  // Enter the new reftable into the header (refcount_table_offset, refcount_table_clusters).
  const hdr = new Uint8Array(12);
  const hv = new DataView(hdr.buffer);
  hv.setBigUint64(0, BigInt(reftableOffset));
  hv.setUint32(8, reftableClusters);
  try {
    await ctx.writeAt(48, hdr, true);
  } catch (err) {
    throw failure(err, 'ERROR setting reftable');
  }

  device.header.refcountTableOffset = reftableOffset;
  device.header.refcountTableClusters = reftableClusters;
  device.refcounts.replaceTable([...reftable.entries], reftableOffset);
  ctx.setReftable(BigUint64Array.from(reftable.entries, (e) => BigInt(e)));
}
