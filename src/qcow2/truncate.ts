// Changing a qcow2 image's virtual size (QEMU 7.2 qcow2_co_truncate): growing goes through the
// device's grow() (L1 growth, preallocation, zeroing over a larger backing file); shrinking
// discards the clusters beyond the new end, shrinks the L1 table (qcow2_shrink_l1_table), drops
// refcount blocks that describe nothing (qcow2_shrink_reftable) and cuts the file after the
// last used cluster.
//
// Crash ordering: L2 entries are cleared and on disk before the clusters they pointed to lose
// their references; the L1 tail is zeroed and flushed before the L2 tables are freed; the
// reftable is rewritten before its dropped refcount blocks are released; the header's size is
// written last.

import type { PreallocMode } from '../block/preallocate.js';
import { truncateHostFile } from '../block/preallocate.js';
import {
  CorruptImageError,
  InvalidArgumentError,
  NotSupportedError,
  isZero,
} from '../core/index.js';
import { hasFeature } from './header.js';
import { entryOffset } from './l2-entry.js';
import type { Qcow2Device } from './qcow2-device.js';
import { getRefcount, setRefcount } from './refcount.js';

export interface Qcow2TruncateOptions {
  /** @default 'off'; only for growing */
  prealloc?: PreallocMode;
  /** Shrinking discards data; callers say they mean it (qemu-img resize --shrink). */
  allowShrink?: boolean;
}

/** qcow2_co_truncate(): grow or shrink the virtual size to `newSize` bytes. */
export async function truncateQcow2(
  dev: Qcow2Device,
  newSize: number,
  options: Qcow2TruncateOptions = {},
): Promise<void> {
  dev.internals().checkWritable();
  await dev.withExclusiveLock(() => truncateLocked(dev, newSize, options));
}

async function truncateLocked(
  dev: Qcow2Device,
  newSize: number,
  options: Qcow2TruncateOptions,
): Promise<void> {
  const prealloc = options.prealloc ?? 'off';
  if (!Number.isSafeInteger(newSize) || newSize < 0 || newSize % 512 !== 0) {
    throw new InvalidArgumentError('The new size must be a multiple of 512', {
      code: 'VMF_RESIZE',
      details: { errno: 'EINVAL' },
    });
  }
  // "Even though we store snapshot size for all images, it was not required until v3."
  if (dev.snapshots.length > 0 && dev.header.version < 3) {
    throw new NotSupportedError("Can't resize a v2 image which has snapshots", {
      details: { errno: 'ENOTSUP' },
    });
  }
  const oldSize = dev.size;
  if (newSize >= oldSize) {
    // grow() runs the persistent bitmaps' qcow2_truncate_bitmaps_check and truncates them.
    await dev.internals().grow(newSize, prealloc);
    return;
  }
  // qcow2_truncate_bitmaps_check(): every bitmap loaded and usable, else no resize at all.
  await dev.writeObserver?.beforeResize(newSize);
  if (prealloc !== 'off') {
    throw new InvalidArgumentError("Preallocation can't be used for shrinking an image", {
      details: { errno: 'EINVAL' },
    });
  }
  if (!options.allowShrink) {
    throw new InvalidArgumentError('Shrinking needs allowShrink (it discards data)', {
      code: 'VMF_RESIZE',
    });
  }
  await shrinkLocked(dev, newSize);
  dev.writeObserver?.afterResize(newSize); // bdrv_dirty_bitmap_truncate
}

/**
 * qcow2_truncate_bitmaps_check(): inconsistent bitmaps stop a resize as in QEMU. QEMU resizes
 * consistent ones in memory and stores them on close; vmforge cannot rewrite bitmaps yet, so it
 * refuses rather than leave bitmaps of the wrong size.
 */
/** The shrink half of qcow2_co_truncate. */
async function shrinkLocked(dev: Qcow2Device, newSize: number): Promise<void> {
  const internals = dev.internals();
  const { clusterSize: cs, l2Coverage } = dev.layout;
  const oldSize = dev.size;

  // qcow2_cluster_discard(ROUND_UP(offset), old - ROUND_UP(offset), ALWAYS, full_discard).
  // QEMU frees as it goes, so the next L2 allocation may reuse what the previous table freed:
  // flush after each table to allocate the same clusters.
  const start = Math.ceil(newSize / cs) * cs;
  for (let pos = start; pos < oldSize;) {
    const stop = Math.min(oldSize, (Math.floor(pos / l2Coverage) + 1) * l2Coverage);
    await internals.clusterDiscard(pos, stop - pos, true);
    await internals.flushMetadata();
    pos = stop;
  }

  await shrinkL1(dev, Math.ceil(newSize / l2Coverage));
  await shrinkReftable(dev);
  await internals.flushMetadata();
  await dev.storage.flush();

  // The external data file follows the virtual size (PREALLOC_MODE_OFF case, exact).
  if (hasFeature.dataFile(dev.header)) await truncateHostFile(dev.dataStorage, newSize, 'off');

  // Cut the file after the last cluster still in use; a failure here is only a warning in QEMU.
  const fileSize = await dev.storage.size();
  const last = await internals.lastUsedCluster(fileSize);
  if ((last + 1) * cs < fileSize)
    await dev.storage.truncate((last + 1) * cs).catch(() => undefined);

  dev.header.size = newSize;
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(newSize));
  await dev.storage.write(b, 24);
  await dev.storage.flush();
  internals.tablesChanged();
}

/**
 * qcow2_shrink_l1_table(): zero the L1 entries from `newL1Size` on (on disk first), then free
 * the L2 tables they pointed to. The L1 table itself keeps its size, as in QEMU.
 */
async function shrinkL1(dev: Qcow2Device, newL1Size: number): Promise<void> {
  const l1Size = dev.l1Size;
  if (newL1Size >= l1Size) return;
  const cs = dev.layout.clusterSize;
  await dev.storage.write(
    new Uint8Array((l1Size - newL1Size) * 8),
    dev.header.l1TableOffset + newL1Size * 8,
  );
  await dev.storage.flush();
  const l1 = dev.l1Raw();
  const refcounts = dev.refcounts;
  for (let i = l1Size - 1; i >= newL1Size; i--) {
    const off = entryOffset({ hi: l1[2 * i]!, lo: l1[2 * i + 1]! });
    l1[2 * i] = 0;
    l1[2 * i + 1] = 0;
    if (off === 0) continue;
    await refcounts.update(off, cs, -1);
    if ((await refcounts.get(off / cs)) === 0) await refcounts.onClusterFreed?.(off, cs);
  }
  dev.internals().tablesChanged();
}

/**
 * qcow2_shrink_reftable(): reftable entries whose refcount block counts nothing (but itself)
 * are cleared, the table rewritten, then those blocks freed.
 */
async function shrinkReftable(dev: Qcow2Device): Promise<void> {
  const r = dev.refcounts;
  const { clusterSize: cs, refblockEntries: per, refcountOrder: order } = r.layout;
  const next = [...r.table];
  for (let i = 0; i < r.table.length; i++) {
    const off = r.table[i]!;
    if (off === 0) continue;
    const block = await r.cache.get(off);
    let unused: boolean;
    if (Math.floor(off / cs / per) === i) {
      // The block has its own reference: ignore it.
      const own = (off / cs) % per;
      const v = getRefcount(block, own, order);
      setRefcount(block, own, order, 0);
      unused = isZero(block);
      setRefcount(block, own, order, v);
    } else {
      unused = isZero(block);
    }
    if (unused) next[i] = 0;
  }
  const buf = new Uint8Array(r.table.length * 8);
  const view = new DataView(buf.buffer);
  for (let i = 0; i < next.length; i++) view.setBigUint64(i * 8, BigInt(next[i]!));
  await r.storage.write(buf, r.tableOffset);
  await r.storage.flush();
  for (let i = 0; i < r.table.length; i++) {
    const off = r.table[i]!;
    if (off === 0 || next[i] !== 0) continue;
    await discardRefcountBlock(dev, off);
    r.setTableEntry(i, 0);
  }
}

/** qcow2_discard_refcount_block(): drop the refcount of a refcount block that left the table. */
async function discardRefcountBlock(dev: Qcow2Device, offset: number): Promise<void> {
  const r = dev.refcounts;
  const { clusterSize: cs, refblockEntries: per, refcountOrder: order } = r.layout;
  const cluster = offset / cs;
  const covering = r.table[Math.floor(cluster / per)] ?? 0;
  if (covering === 0) {
    throw new CorruptImageError(
      `qcow2: Image is corrupt: Refblock at 0x${offset.toString(16)} is not covered by the refcount structures`,
      { details: { errno: 'EIO' } },
    );
  }
  const block = await r.cache.get(covering);
  const index = cluster % per;
  const refcount = getRefcount(block, index, order);
  if (refcount !== 1) {
    throw new CorruptImageError(
      `qcow2: Image is corrupt: Invalid refcount: refblock offset 0x${covering.toString(16)}, reftable index ${Math.floor(cluster / per)}, block offset 0x${offset.toString(16)}, refcount 0x${refcount.toString(16)}`,
      { details: { errno: 'EINVAL' } },
    );
  }
  setRefcount(block, index, order, 0);
  r.cache.markDirty(covering);
  if (cluster < r.freeClusterIndex) r.freeClusterIndex = cluster;
  r.cache.discard(offset);
}
