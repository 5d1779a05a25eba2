// Internal snapshots (qcow2.rst "Snapshots"): create, apply (goto) and delete, following QEMU
// 7.2's block/qcow2-snapshot.c and qcow2_update_snapshot_refcount() in qcow2-refcount.c, so
// images stay interchangeable with qemu-img and laid out the way it lays them out.
//
// Crash safety (a process killed at any point leaves leaks or stale COPIED flags at worst, which
// `qemu-img check -r all` repairs; never a reference to a cluster whose refcount is too low):
//   create: snapshot L1 copy written, refcounts of everything the active L1 reaches incremented
//           and flushed, COPIED cleared in the active tables, and only then the snapshot table
//           (new table in fresh clusters, flushed, then the header switched to it).
//   apply:  refcounts of the snapshot's clusters incremented and flushed before the active L1 is
//           overwritten; the copy is written with COPIED clear (QEMU writes the snapshot's stale
//           flags and fixes them afterwards); the old active clusters are decremented after.
//   delete: the snapshot leaves the table (header switched) before any refcount is decremented.

import {
  CorruptImageError,
  InvalidArgumentError,
  NotSupportedError,
  VmforgeError,
  readU32BE,
  truncateCString,
  writeU32BE,
} from '../core/index.js';
import { encodeByteString } from '../core/byte-string.js';
import {
  AUTOCLEAR_BITMAPS,
  MAX_L1_SIZE_BYTES,
  MAX_SNAPSHOTS,
  MAX_SNAPSHOTS_SIZE,
} from './constants.js';
import { hasFeature } from './header.js';
import {
  clusterType,
  compressedLocation,
  COPIED_HI,
  entryOffset,
  readL2Entry,
  writeL2Entry,
} from './l2-entry.js';
import type { Qcow2Device } from './qcow2-device.js';
import { RetryAllocation, type Refcounts } from './refcount.js';
import { encodeSnapshotTable, type Qcow2Snapshot } from './snapshot-table.js';
import { truncateQcow2 } from './truncate.js';

/** An operation failed with the errno QEMU's code path returns (qemu-img prints it). */
export function errnoError(
  errno: string,
  message: string,
  Kind: typeof NotSupportedError | typeof InvalidArgumentError = NotSupportedError,
): VmforgeError {
  return new Kind(message, { code: `VMF_${errno}`, details: { errno } });
}

/** The errno an error carries (details.errno), EIO for anything else (QEMU's -EIO). */
export function errnoOf(err: unknown): string {
  if (err instanceof VmforgeError) {
    const e = err.details['errno'];
    if (typeof e === 'string') return e;
    if ('errno' in err && typeof err.errno === 'string') return err.errno;
  }
  return 'EIO';
}

export interface SnapshotCreateInfo {
  /** Tag; truncated to 255 bytes as QEMU's QEMUSnapshotInfo.name[256] does. */
  name: string;
  dateSec: number;
  dateNsec: number;
  /** @default 0n (qemu-img snapshot -c) */
  vmClockNsec?: bigint;
  /** @default 0 (qemu-img zeroes QEMUSnapshotInfo, so it records icount 0, not -1) */
  icount?: number | undefined;
}

// ---------------------------------------------------------------------------------------------
// Lookup (find_snapshot_by_id_and_name / find_snapshot_by_id_or_name)

export function findSnapshotIndex(
  snapshots: readonly Qcow2Snapshot[],
  id: string | undefined,
  name: string | undefined,
): number {
  if (id !== undefined && name !== undefined)
    return snapshots.findIndex((s) => s.id === id && s.name === name);
  if (id !== undefined) return snapshots.findIndex((s) => s.id === id);
  if (name !== undefined) return snapshots.findIndex((s) => s.name === name);
  return -1;
}

export function findSnapshotByIdOrName(
  snapshots: readonly Qcow2Snapshot[],
  idOrName: string,
): number {
  const i = findSnapshotIndex(snapshots, idOrName, undefined);
  return i >= 0 ? i : findSnapshotIndex(snapshots, undefined, idOrName);
}

const ULONG_MAX = (1n << 64n) - 1n;

/** strtoul(id, NULL, 10) as glibc does it: leading digits, a sign wraps, overflow saturates. */
function strtoul(text: string): bigint {
  const m = /^[ \t\n\v\f\r]*([+-]?)(\d+)/.exec(text);
  if (!m) return 0n;
  let v = BigInt(m[2]!);
  if (v > ULONG_MAX) return ULONG_MAX;
  if (m[1] === '-') v = (ULONG_MAX + 1n - v) & ULONG_MAX;
  return v;
}

/** find_new_snapshot_id(): one more than the largest numeric id, printed with %lu. */
export function newSnapshotId(snapshots: readonly Qcow2Snapshot[]): string {
  let max = 0n;
  for (const s of snapshots) {
    const id = strtoul(s.id);
    if (id > max) max = id;
  }
  return ((max + 1n) & ULONG_MAX).toString();
}

// ---------------------------------------------------------------------------------------------
// L1 tables on disk

export function decodeL1(bytes: Uint8Array, entries = bytes.length / 8): Uint32Array {
  const l1 = new Uint32Array(entries * 2);
  const n = Math.min(entries * 2, bytes.length / 4);
  for (let i = 0; i < n; i++) l1[i] = readU32BE(bytes, i * 4);
  return l1;
}

export function encodeL1(l1: Uint32Array): Uint8Array {
  const buf = new Uint8Array(l1.length * 4);
  for (let i = 0; i < l1.length; i++) writeU32BE(buf, i * 4, l1[i]!);
  return buf;
}

async function readL1(dev: Qcow2Device, offset: number, entries: number): Promise<Uint32Array> {
  const bytes = new Uint8Array(entries * 8);
  await dev.storage.read(bytes, offset);
  return decodeL1(bytes);
}

/** qcow2_validate_table() for a snapshot's L1 table. */
function validateSnapshotL1(dev: Qcow2Device, sn: Qcow2Snapshot): void {
  if (sn.l1Size > MAX_L1_SIZE_BYTES / 8) {
    throw errnoError('EFBIG', 'Snapshot L1 table too large');
  }
  if (
    Number.MAX_SAFE_INTEGER - sn.l1Size * 8 < sn.l1TableOffset ||
    sn.l1TableOffset % dev.layout.clusterSize !== 0
  ) {
    throw errnoError('EINVAL', 'Snapshot L1 table offset invalid', InvalidArgumentError);
  }
}

// ---------------------------------------------------------------------------------------------
// qcow2_update_snapshot_refcount

/** Refcount changes that cannot need a new refcount block, retried if one is missing anyway. */
async function changeRefcount(
  refcounts: Refcounts,
  offset: number,
  length: number,
  delta: number,
): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await refcounts.update(offset, length, delta);
      return;
    } catch (err) {
      // update_refcount(): a refcount beyond the width's maximum is -EINVAL.
      if (err instanceof VmforgeError && err.code === 'VMF_QCOW2_REFCOUNT') {
        throw new InvalidArgumentError(err.message, { cause: err, details: { errno: 'EINVAL' } });
      }
      if (!(err instanceof RetryAllocation) || attempt >= 3) throw err;
    }
  }
}

/**
 * Add `addend` (-1, 0 or +1) to the refcount of every L2 table and data cluster that `l1`
 * reaches, and set QCOW_OFLAG_COPIED exactly where the resulting refcount is 1 (in the L2
 * entries and in `l1`, which is modified in place). When `writeBack` is given and addend >= 0,
 * a changed `l1` is written there afterwards. Returns the host clusters whose refcount reached 0.
 */
export async function updateSnapshotRefcount(
  dev: Qcow2Device,
  l1: Uint32Array,
  l1Size: number,
  addend: -1 | 0 | 1,
  writeBack: number | undefined,
): Promise<number[]> {
  const { layout } = dev;
  const cs = layout.clusterSize;
  const refcounts = dev.refcounts;
  const cache = dev.l2Cache;
  const freed: number[] = [];
  let l1Modified = false;
  const noteFreed = async (offset: number, length: number) => {
    if (addend >= 0) return;
    for (let c = Math.floor(offset / cs); c * cs < offset + length; c++) {
      if ((await refcounts.get(c)) === 0) freed.push(c * cs);
    }
  };

  for (let i = 0; i < l1Size; i++) {
    const oldHi = l1[2 * i]!;
    const oldLo = l1[2 * i + 1]!;
    const l2Offset = entryOffset({ hi: oldHi, lo: oldLo });
    if (oldHi === 0 && oldLo === 0) continue;
    if (l2Offset % cs !== 0) {
      throw new CorruptImageError(
        `qcow2: Image is corrupt: L2 table offset 0x${l2Offset.toString(16)} unaligned (L1 index: 0x${i.toString(16)})`,
        { code: 'VMF_QCOW2_CORRUPT', details: { errno: 'EIO' } },
      );
    }
    if (l2Offset !== 0) {
      const table = await cache.get(l2Offset);
      let dirty = false;
      for (let j = 0; j < layout.l2Entries; j++) {
        const old = readL2Entry(table, j, layout);
        const e = { ...old, hi: (old.hi & ~COPIED_HI) >>> 0 };
        let refcount: number;
        switch (clusterType(e, layout, false)) {
          case 'compressed': {
            if (addend !== 0) {
              const { offset, size } = compressedLocation(e, layout);
              await changeRefcount(refcounts, offset, size, addend);
              await noteFreed(offset, size);
            }
            refcount = 2; // compressed clusters are never modified in place
            break;
          }
          case 'normal':
          case 'zero-alloc': {
            const host = entryOffset(e);
            if (host % cs !== 0) {
              throw new CorruptImageError(
                `qcow2: Image is corrupt: Cluster allocation offset 0x${host.toString(16)} unaligned (L2 offset: 0x${l2Offset.toString(16)}, L2 index: 0x${j.toString(16)})`,
                { code: 'VMF_QCOW2_CORRUPT', details: { errno: 'EIO' } },
              );
            }
            if (addend !== 0) {
              await changeRefcount(refcounts, host, cs, addend);
              await noteFreed(host, cs);
            }
            refcount = await refcounts.get(host / cs);
            break;
          }
          default:
            refcount = 0;
        }
        if (refcount === 1) e.hi = (e.hi | COPIED_HI) >>> 0;
        if (e.hi !== old.hi) {
          // A freed table is dropped from the cache by the refcount hook; only live ones change.
          writeL2Entry(table, j, layout, e);
          dirty = true;
        }
      }
      if (dirty && cache.has(l2Offset)) cache.markDirty(l2Offset);
      if (addend !== 0) {
        await changeRefcount(refcounts, l2Offset, cs, addend);
        await noteFreed(l2Offset, cs);
      }
    }
    const refcount = l2Offset === 0 ? 0 : await refcounts.get(l2Offset / cs);
    const newHi = (Math.floor(l2Offset / 0x1_0000_0000) | (refcount === 1 ? COPIED_HI : 0)) >>> 0;
    const newLo = l2Offset % 0x1_0000_0000;
    if (newHi !== oldHi || newLo !== oldLo) {
      l1[2 * i] = newHi;
      l1[2 * i + 1] = newLo;
      l1Modified = true;
    }
  }

  // bdrv_flush(): refcount increments first, then the L2 tables (the L2 cache's write-back hook).
  await dev.internals().flushMetadata();
  await dev.storage.flush();

  if (writeBack !== undefined && addend >= 0 && l1Modified) {
    await dev.storage.write(encodeL1(l1.subarray(0, l1Size * 2)), writeBack);
    await dev.storage.flush();
  }
  return freed;
}

/** Pass freed clusters down to the file (QEMU's discard passthrough for snapshot frees). */
async function discardFreed(dev: Qcow2Device, freed: number[]): Promise<void> {
  const refcounts = dev.refcounts;
  if (!refcounts.onClusterFreed || freed.length === 0) return;
  const cs = dev.layout.clusterSize;
  for (const off of new Set(freed)) {
    // Only what is still free: nothing allocates between the frees and this point.
    if ((await refcounts.get(off / cs)) === 0) await refcounts.onClusterFreed(off, cs);
  }
}

// ---------------------------------------------------------------------------------------------
// The snapshot table (qcow2_write_snapshots)

/** The table's size as QEMU counts it: entries 8-aligned, no padding after the last one. */
export function snapshotTableSize(snapshots: readonly Qcow2Snapshot[], onDisk: boolean): number {
  let offset = 0;
  for (const sn of snapshots) {
    offset = Math.ceil(offset / 8) * 8;
    offset += 40 + (onDisk ? sn.extraDataSize : Math.max(24, sn.extraDataSize));
    offset += encodeByteString(sn.id).length + encodeByteString(sn.name).length;
  }
  return offset;
}

/**
 * Write `snapshots` as the new snapshot table in fresh clusters and switch the header to it,
 * then free the old table (whose size, as found on disk, is `oldSize`).
 */
export async function writeSnapshotTable(
  dev: Qcow2Device,
  snapshots: Qcow2Snapshot[],
  oldSize: number,
): Promise<void> {
  const internals = dev.internals();
  const refcounts = dev.refcounts;
  const cs = dev.layout.clusterSize;
  const size = snapshotTableSize(snapshots, false);
  if (size > MAX_SNAPSHOTS_SIZE) throw errnoError('EFBIG', 'Snapshot table is too big');
  // qcow2_alloc_clusters(bs, 0) allocates nothing and returns the first free cluster.
  const offset = await refcounts.allocClusters(Math.ceil(size / cs));
  try {
    await internals.flushMetadata();
    await dev.storage.flush();
    internals.checkOverlap(offset, size);
    if (size > 0) await dev.storage.write(encodeSnapshotTable(snapshots).subarray(0, size), offset);
    await dev.storage.flush();
    const hdr = new Uint8Array(12);
    const view = new DataView(hdr.buffer);
    view.setUint32(0, snapshots.length);
    view.setBigUint64(4, BigInt(offset));
    await dev.storage.write(hdr, 60);
    await dev.storage.flush();
  } catch (err) {
    if (offset > 0 && size > 0) await refcounts.update(offset, size, -1).catch(() => undefined);
    throw err;
  }
  const oldOffset = dev.header.snapshotsOffset;
  dev.header.snapshotsOffset = offset;
  dev.header.nbSnapshots = snapshots.length;
  for (const sn of snapshots) sn.extraDataSize = Math.max(24, sn.extraDataSize);
  dev.snapshots.splice(0, dev.snapshots.length, ...snapshots);
  if (oldSize > 0) await changeRefcount(refcounts, oldOffset, oldSize, -1);
}

// ---------------------------------------------------------------------------------------------
// Operations

/** qcow2_snapshot_create(), as `qemu-img snapshot -c` drives it. */
export async function createSnapshot(
  dev: Qcow2Device,
  info: SnapshotCreateInfo,
): Promise<Qcow2Snapshot> {
  return dev.withExclusiveLock(async () => {
    const internals = dev.internals();
    internals.checkWritable();
    if (dev.snapshots.length >= MAX_SNAPSHOTS) throw errnoError('EFBIG', 'Too many snapshots');
    if (hasFeature.dataFile(dev.header)) {
      throw errnoError(
        'ENOTSUP',
        'Internal snapshots are not supported with an external data file',
      );
    }
    const l1Size = dev.l1Size;
    const l1 = dev.l1Raw();
    const cs = dev.layout.clusterSize;
    const sn: Qcow2Snapshot = {
      l1TableOffset: 0,
      l1Size,
      id: newSnapshotId(dev.snapshots),
      name: truncateCString(info.name, 256),
      dateSec: info.dateSec,
      dateNsec: info.dateNsec,
      vmClockNsec: info.vmClockNsec ?? 0n,
      vmStateSize: 0,
      diskSize: dev.size,
      icount: 'icount' in info ? info.icount : 0,
      extraDataSize: 24,
      unknownExtraData: new Uint8Array(0),
    };
    // The snapshot's L1 table: a copy of the active one, flags as they are now.
    sn.l1TableOffset = await dev.refcounts.allocClusters(Math.ceil((l1Size * 8) / cs));
    internals.checkOverlap(sn.l1TableOffset, l1Size * 8);
    if (l1Size > 0) await dev.storage.write(encodeL1(l1), sn.l1TableOffset);

    // Everything the active L1 reaches gains a reference, stable on disk before the snapshot
    // table points at the copy.
    await updateSnapshotRefcount(dev, l1, l1Size, 1, dev.header.l1TableOffset);
    internals.tablesChanged();

    const oldSize = snapshotTableSize(dev.snapshots, true);
    await writeSnapshotTable(dev, [...dev.snapshots, sn], oldSize);
    // The VM state (none from qemu-img) would be discarded from the active L1 here.
    return sn;
  });
}

/** qcow2_snapshot_goto(): make the snapshot's content the active content (snapshot -a). */
export async function applySnapshot(dev: Qcow2Device, idOrName: string): Promise<void> {
  const sn = await dev.withExclusiveLock(async () => {
    dev.internals().checkWritable();
    // bdrv_snapshot_goto refuses before the driver runs.
    if ((dev.header.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n && dev.header.bitmaps) {
      throw errnoError('EBUSY', 'Device has active dirty bitmaps');
    }
    if (hasFeature.dataFile(dev.header)) {
      throw errnoError('ENOTSUP', 'Failed to load snapshot: Operation not supported');
    }
    const index = findSnapshotByIdOrName(dev.snapshots, idOrName);
    if (index < 0) {
      throw errnoError(
        'ENOENT',
        'Failed to load snapshot: No such file or directory',
        InvalidArgumentError,
      );
    }
    const found = dev.snapshots[index]!;
    validateSnapshotL1(dev, found);
    return found;
  });

  // The virtual size goes back to the snapshot's (blk_truncate, shrinking allowed).
  if (sn.diskSize !== dev.size) {
    try {
      await truncateQcow2(dev, sn.diskSize, { prealloc: 'off', allowShrink: true });
    } catch (err) {
      // QEMU reports the resize error on its own line, then the failed load.
      const errno = errnoOf(err);
      throw new NotSupportedError(
        `Failed to load snapshot: ${STRERROR_SHORT[errno] ?? 'Input/output error'}`,
        {
          cause: err,
          details: { errno, preface: [err instanceof Error ? err.message : String(err)] },
        },
      );
    }
  }

  await dev.withExclusiveLock(async () => {
    const internals = dev.internals();
    await internals.growL1(sn.l1Size, true);
    const curSize = dev.l1Size;
    const snL1 = await readL1(dev, sn.l1TableOffset, sn.l1Size);
    const newL1 = new Uint32Array(curSize * 2);
    newL1.set(snL1.subarray(0, Math.min(snL1.length, newL1.length)));

    await updateSnapshotRefcount(dev, snL1, sn.l1Size, 1, sn.l1TableOffset);

    // Every table the copy points to is now shared: no COPIED flag may survive in the active
    // L1 until the final pass recomputes them (QEMU writes the snapshot's stale flags here).
    for (let i = 0; i < curSize; i++) newL1[2 * i] = (newL1[2 * i]! & ~COPIED_HI) >>> 0;
    internals.checkOverlap(dev.header.l1TableOffset, curSize * 8, true);
    await dev.storage.write(encodeL1(newL1), dev.header.l1TableOffset);
    await dev.storage.flush();

    const oldL1 = dev.l1Raw();
    let freed: number[];
    try {
      freed = await updateSnapshotRefcount(dev, oldL1, curSize, -1, undefined);
    } finally {
      dev.setL1(newL1);
      internals.tablesChanged();
    }
    await updateSnapshotRefcount(dev, newL1, curSize, 0, dev.header.l1TableOffset);
    await discardFreed(dev, freed);
  });
}

/**
 * qcow2_snapshot_delete(): the first snapshot matching both `id` and `name` (either may be
 * undefined, not both).
 */
export async function deleteSnapshot(
  dev: Qcow2Device,
  id: string | undefined,
  name: string | undefined,
): Promise<Qcow2Snapshot> {
  return dev.withExclusiveLock(async () => {
    const internals = dev.internals();
    internals.checkWritable();
    if (id === undefined && name === undefined) {
      throw errnoError('EINVAL', 'snapshot_id and name are both NULL', InvalidArgumentError);
    }
    if (hasFeature.dataFile(dev.header)) {
      throw errnoError(
        'ENOTSUP',
        'Internal snapshots are not supported with an external data file',
      );
    }
    const index = findSnapshotIndex(dev.snapshots, id, name);
    if (index < 0) throw errnoError('ENOENT', "Can't find the snapshot", InvalidArgumentError);
    const sn = dev.snapshots[index]!;
    validateSnapshotL1(dev, sn);

    const oldSize = snapshotTableSize(dev.snapshots, true);
    try {
      await writeSnapshotTable(
        dev,
        dev.snapshots.filter((_, i) => i !== index),
        oldSize,
      );
    } catch (err) {
      throw wrapErrno(err, 'Failed to remove snapshot from snapshot list');
    }

    // Unreferenced now: from here on a failure only leaks clusters.
    let freed: number[];
    try {
      const l1 = await readL1(dev, sn.l1TableOffset, sn.l1Size);
      freed = await updateSnapshotRefcount(dev, l1, sn.l1Size, -1, undefined);
      const cs = dev.layout.clusterSize;
      if (sn.l1Size > 0) {
        await changeRefcount(dev.refcounts, sn.l1TableOffset, sn.l1Size * 8, -1);
        for (let c = sn.l1TableOffset / cs; c * cs < sn.l1TableOffset + sn.l1Size * 8; c++) {
          if ((await dev.refcounts.get(c)) === 0) freed.push(c * cs);
        }
      }
    } catch (err) {
      throw wrapErrno(err, 'Failed to free the cluster and L1 table');
    }
    try {
      await updateSnapshotRefcount(dev, dev.l1Raw(), dev.l1Size, 0, dev.header.l1TableOffset);
      internals.tablesChanged();
    } catch (err) {
      throw wrapErrno(err, 'Failed to update snapshot status in disk');
    }
    await discardFreed(dev, freed);
    return sn;
  });
}

/** error_setg_errno(errp, -ret, "<what>"): "<what>: <strerror>". */
function wrapErrno(err: unknown, what: string): VmforgeError {
  const errno = errnoOf(err);
  const text = STRERROR_SHORT[errno] ?? 'Input/output error';
  return new NotSupportedError(`${what}: ${text}`, { cause: err, details: { errno } });
}

const STRERROR_SHORT: Record<string, string> = {
  EIO: 'Input/output error',
  EFBIG: 'File too large',
  ENOSPC: 'No space left on device',
  EINVAL: 'Invalid argument',
  ENOTSUP: 'Operation not supported',
  ENOENT: 'No such file or directory',
  EBUSY: 'Device or resource busy',
};
