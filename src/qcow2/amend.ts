// qemu-img amend for qcow2 (QEMU 7.2 qcow2_amend_options, qcow2_upgrade, qcow2_downgrade,
// qcow2_expand_zero_clusters): the steps run in QEMU's order, with its checks and messages:
//   upgrade (v2 -> v3: snapshot table rewritten with v3 extra data), refcount width change,
//   data_file / data_file_raw, header update, backing file check, lazy_refcounts, size,
//   downgrade (v3 -> v2: zero clusters expanded or dropped, features cleared) last.

import {
  CorruptImageError,
  InvalidArgumentError,
  NotSupportedError,
  throwIfAborted,
} from '../core/index.js';
import {
  AUTOCLEAR_DATA_FILE_RAW,
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_ZLIB,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DIRTY,
  MAX_L1_SIZE_BYTES,
} from './constants.js';
import { hasFeature } from './header.js';
import { clusterType, entryOffset, makeEntry, readL2Entry, writeL2Entry } from './l2-entry.js';
import type { Qcow2Device } from './qcow2-device.js';
import { changeRefcountOrder } from './refcount-order.js';
import { decodeL1, snapshotTableSize, writeSnapshotTable } from './snapshots.js';
import { truncateQcow2 } from './truncate.js';

/** What to change; absent fields stay as they are (qemu-img amend -o only touches what it names). */
export interface Qcow2AmendOptions {
  /** compat: 2 (0.10) or 3 (1.1). */
  version?: 2 | 3;
  /** New virtual size (0 or absent: unchanged); may shrink, as amend does. */
  size?: number;
  /** Must equal the current backing file: amend cannot change it (use rebase). */
  backingFile?: string;
  backingFormat?: string;
  /** New name of the external data file ('' removes the name). */
  dataFile?: string;
  dataFileRaw?: boolean;
  lazyRefcounts?: boolean;
  refcountBits?: number;
  /** encrypt.* options were given (LUKS key slot changes; vmforge does not do those). */
  encryption?: boolean;
}

export interface Qcow2AmendContext {
  /** Progress as QEMU's status callback reports it: work done so far and total work. */
  onStatus?: (offset: number, total: number) => void;
  /**
   * Close `dev` and open the image again read-write: the refcount width change runs on the
   * closed file. Returns the new device.
   */
  reopen: (dev: Qcow2Device) => Promise<Qcow2Device>;
  /** Checked between steps: an abort stops at the next step boundary, the image consistent. */
  signal?: AbortSignal;
}

function caller(message: string): never {
  throw new InvalidArgumentError(message, { details: { errno: 'EINVAL' } });
}

function unsupported(message: string): never {
  throw new NotSupportedError(message, { details: { errno: 'ENOTSUP' } });
}

/** Qcow2AmendHelperCBInfo: folds several operations' progress into one. */
class AmendProgress {
  total = 0;
  current = 0;
  #completed = 0;
  #offsetCompleted = 0;
  #last = 0;
  #lastWork = 0;
  constructor(private readonly report: (offset: number, total: number) => void) {}

  cb = (offset: number, work: number): void => {
    if (this.current !== this.#last) {
      if (this.#last !== 0) {
        this.#offsetCompleted += this.#lastWork;
        this.#completed++;
      }
      this.#last = this.current;
    }
    this.#lastWork = work;
    const currentWork = this.#offsetCompleted + work;
    const projected = Math.floor(
      (currentWork * (this.total - this.#completed - 1)) / (this.#completed + 1),
    );
    this.report(this.#offsetCompleted + offset, currentWork + projected);
  };
}

/**
 * qcow2_amend_options(). Returns the device to use afterwards (a new one when the refcount
 * width changed; `dev` is closed then).
 */
export async function amendQcow2(
  dev: Qcow2Device,
  o: Qcow2AmendOptions,
  ctx: Qcow2AmendContext,
): Promise<Qcow2Device> {
  const h = dev.header;
  const oldVersion = h.version;
  const newVersion = o.version ?? oldVersion;
  const oldRefcountBits = 2 ** h.refcountOrder;
  const refcountBits = o.refcountBits ?? oldRefcountBits;
  const lazy = o.lazyRefcounts ?? (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n;
  const dataFileRaw = o.dataFileRaw ?? hasFeature.dataFileRaw(h);

  // Option checks, in the order QEMU meets them (qcow2_amend_opts order).
  if (o.encryption) {
    if (h.cryptMethod === 0) caller("Can't amend encryption options - encryption not present");
    if (h.cryptMethod !== 2) unsupported('Only LUKS encryption options can be amended');
  }
  if (o.refcountBits !== undefined) {
    const b = o.refcountBits;
    if (b <= 0 || b > 64 || (b & (b - 1)) !== 0) {
      caller('Refcount width must be a power of two and may not exceed 64 bits');
    }
  }
  if (o.dataFile !== undefined && !hasFeature.dataFile(h)) {
    caller('data-file can only be set for images that use an external data file');
  }
  if (o.dataFileRaw && !hasFeature.dataFileRaw(h)) {
    caller('data-file-raw cannot be set on existing images');
  }

  const progress = new AmendProgress(ctx.onStatus ?? (() => {}));
  progress.total =
    (newVersion !== oldVersion ? 1 : 0) +
    (refcountBits !== oldRefcountBits ? 1 : 0) +
    (o.encryption ? 1 : 0);

  throwIfAborted(ctx.signal);
  // Upgrade first (some features need compat=1.1).
  if (newVersion > oldVersion) {
    progress.current = 1;
    await upgrade(dev, progress.cb);
  }
  if (o.encryption) {
    unsupported('vmforge cannot amend LUKS encryption options (use qemu-img amend)');
  }

  throwIfAborted(ctx.signal);
  if (refcountBits !== oldRefcountBits) {
    if (newVersion < 3 && refcountBits !== 16) {
      caller(
        'Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)',
      );
    }
    progress.current = 3;
    await dev.flush();
    const storage = dev.storage;
    const header = dev.header;
    // The width change works on the closed file; reopen() gives a device over the result.
    await dev.withExclusiveLock(async () => {
      await changeRefcountOrder(storage, header, Math.log2(refcountBits), progress.cb);
    });
    dev = await ctx.reopen(dev);
  }

  throwIfAborted(ctx.signal);
  const hdr = dev.header;
  // data-file-raw blocks backing files, so it is cleared first if requested.
  if (dataFileRaw) hdr.autoclearFeatures |= AUTOCLEAR_DATA_FILE_RAW;
  else hdr.autoclearFeatures &= ~AUTOCLEAR_DATA_FILE_RAW;
  if (o.dataFile !== undefined) hdr.dataFile = o.dataFile === '' ? undefined : o.dataFile;
  await dev.withExclusiveLock(() => dev.rewriteHeader());

  if (o.backingFile !== undefined || o.backingFormat !== undefined) {
    if (o.backingFile !== hdr.backingFile || o.backingFormat !== hdr.backingFormat) {
      throw new InvalidArgumentError('Cannot amend the backing file', {
        details: { errno: 'EINVAL' },
      }).withHint("You can use 'qemu-img rebase' instead.");
    }
  }

  const lazyNow = (hdr.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n;
  if (lazyNow !== lazy) {
    if (lazy) {
      if (newVersion < 3) {
        caller(
          'Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)',
        );
      }
      hdr.compatibleFeatures |= COMPAT_LAZY_REFCOUNTS;
      await dev.withExclusiveLock(() => dev.rewriteHeader());
    } else {
      await markClean(dev);
      hdr.compatibleFeatures &= ~COMPAT_LAZY_REFCOUNTS;
      await dev.withExclusiveLock(() => dev.rewriteHeader());
    }
  }

  throwIfAborted(ctx.signal);
  if (o.size) await truncateQcow2(dev, o.size, { prealloc: 'off', allowShrink: true });

  throwIfAborted(ctx.signal);
  // Downgrade last (so unsupported features can be removed before).
  if (newVersion < oldVersion) {
    progress.current = 4;
    await downgrade(dev, progress.cb);
  }
  return dev;
}

/** qcow2_mark_clean(): everything on disk, then the dirty bit cleared. */
async function markClean(dev: Qcow2Device): Promise<void> {
  if ((dev.header.incompatibleFeatures & INCOMPAT_DIRTY) === 0n) return;
  await dev.flush();
  await dev.withExclusiveLock(async () => {
    dev.header.incompatibleFeatures &= ~INCOMPAT_DIRTY;
    await dev.rewriteHeader();
    await dev.storage.flush();
  });
}

/** qcow2_upgrade(): v2 -> v3. */
async function upgrade(
  dev: Qcow2Device,
  cb: (offset: number, total: number) => void,
): Promise<void> {
  cb(0, 2);
  // v3 needs the 64-bit VM state size and the disk size in every snapshot's extra data.
  if (dev.snapshots.some((sn) => sn.extraDataSize < 16)) {
    await dev.withExclusiveLock(async () => {
      const oldSize = snapshotTableSize(dev.snapshots, true);
      try {
        await writeSnapshotTable(dev, [...dev.snapshots], oldSize);
      } catch (err) {
        throw new NotSupportedError('Failed to update the snapshot table: Input/output error', {
          cause: err,
          details: { errno: 'EIO' },
        });
      }
    });
  }
  cb(1, 2);
  dev.header.version = 3;
  await dev.withExclusiveLock(() => dev.rewriteHeader());
  cb(2, 2);
}

/** qcow2_downgrade(): v3 -> v2. */
async function downgrade(
  dev: Qcow2Device,
  cb: (offset: number, total: number) => void,
): Promise<void> {
  const h = dev.header;
  if (h.refcountOrder !== 4) unsupported('compat=0.10 requires refcount_bits=16');
  if (hasFeature.dataFile(h)) unsupported('Cannot downgrade an image with a data file');
  for (const sn of dev.snapshots) {
    if (sn.vmStateSize > 0xffff_ffff || sn.diskSize !== dev.size) {
      unsupported('Internal snapshots prevent downgrade of image');
    }
  }
  await markClean(dev);
  const incompat = h.incompatibleFeatures & ~INCOMPAT_COMPRESSION;
  if (incompat !== 0n) {
    unsupported(
      `Cannot downgrade an image with incompatible features 0x${incompat.toString(16)} set`,
    );
  }
  h.compatibleFeatures = 0n;
  h.autoclearFeatures = 0n;

  await dev.withExclusiveLock(() => expandZeroClusters(dev, cb));

  if ((h.incompatibleFeatures & INCOMPAT_COMPRESSION) !== 0n) {
    if (await hasCompressedClusters(dev)) {
      unsupported(
        'Cannot downgrade an image with zstd compression type and existing compressed clusters',
      );
    }
    h.incompatibleFeatures &= ~INCOMPAT_COMPRESSION;
    h.compressionType = COMPRESSION_ZLIB;
  }
  h.version = 2;
  await dev.withExclusiveLock(() => dev.rewriteHeader());
}

/** qcow2_has_compressed_clusters(): any compressed cluster in the active image. */
async function hasCompressedClusters(dev: Qcow2Device): Promise<boolean> {
  const { layout } = dev;
  const clusters = Math.ceil(dev.size / layout.clusterSize);
  for (let i = 0; i < dev.l1Size && i * layout.l2Entries < clusters; i++) {
    const l2 = dev.l1Entry(i).offset;
    if (l2 === 0) continue;
    const table = await dev.readL2Table(l2);
    const n = Math.min(layout.l2Entries, clusters - i * layout.l2Entries);
    for (let j = 0; j < n; j++) {
      if (clusterType(readL2Entry(table, j, layout), layout, false) === 'compressed') return true;
    }
  }
  return false;
}

/**
 * qcow2_expand_zero_clusters(): zero clusters become data clusters full of zeros (over a backing
 * file) or unallocated (without one; preallocated ones keep their cluster), in the active L1
 * and in every snapshot's.
 */
async function expandZeroClusters(
  dev: Qcow2Device,
  cb: (offset: number, total: number) => void,
): Promise<void> {
  const internals = dev.internals();
  let total = dev.l1Size;
  for (const sn of dev.snapshots) total += sn.l1Size;
  const visited = { n: 0 };
  await expandInL1(dev, dev.l1Raw(), dev.l1Size, true, visited, total, cb);
  // Snapshot L1s may point at active L2 tables: everything to disk, then read around the cache.
  await internals.flushMetadata();
  dev.l2Cache.clear();
  for (const sn of dev.snapshots) {
    if (sn.l1Size > MAX_L1_SIZE_BYTES / 8 || sn.l1TableOffset % dev.layout.clusterSize !== 0) {
      throw new CorruptImageError(
        sn.l1Size > MAX_L1_SIZE_BYTES / 8
          ? 'Snapshot L1 table too large'
          : 'Snapshot L1 table offset invalid',
      );
    }
    const bytes = new Uint8Array(sn.l1Size * 8);
    await dev.storage.read(bytes, sn.l1TableOffset);
    await expandInL1(dev, decodeL1(bytes), sn.l1Size, false, visited, total, cb);
  }
  await internals.flushMetadata();
  internals.tablesChanged();
}

async function expandInL1(
  dev: Qcow2Device,
  l1: Uint32Array,
  l1Size: number,
  active: boolean,
  visited: { n: number },
  total: number,
  cb: (offset: number, total: number) => void,
): Promise<void> {
  const { layout } = dev;
  const cs = layout.clusterSize;
  const refcounts = dev.refcounts;
  const internals = dev.internals();
  for (let i = 0; i < l1Size; i++) {
    const l2Offset = entryOffset({ hi: l1[2 * i]!, lo: l1[2 * i + 1]! });
    if (l2Offset === 0) {
      visited.n++;
      cb(visited.n, total);
      continue;
    }
    if (l2Offset % cs !== 0) {
      throw new CorruptImageError(
        `qcow2: Image is corrupt: L2 table offset 0x${l2Offset.toString(16)} unaligned (L1 index: 0x${i.toString(16)})`,
      );
    }
    const l2Refcount = await refcounts.get(l2Offset / cs);
    let table: Uint8Array;
    if (active) table = await dev.l2Cache.get(l2Offset);
    else {
      table = new Uint8Array(cs);
      await dev.storage.read(table, l2Offset);
    }
    let dirty = false;
    for (let j = 0; j < layout.l2Entries; j++) {
      const e = readL2Entry(table, j, layout);
      const type = clusterType(e, layout, false);
      if (type !== 'zero-plain' && type !== 'zero-alloc') continue;
      let offset = entryOffset(e);
      if (type === 'zero-plain') {
        if (!dev.backing) {
          writeL2Entry(table, j, layout, { hi: 0, lo: 0, zeroBits: 0, allocBits: 0 });
          dirty = true;
          continue;
        }
        offset = await refcounts.allocClusters(1);
        // A shared L2 table: the new cluster gets the table's refcount.
        if (l2Refcount > 1) await refcounts.update(offset, cs, l2Refcount - 1);
      }
      if (offset % cs !== 0) {
        throw new CorruptImageError(
          `qcow2: Image is corrupt: Cluster allocation offset 0x${offset.toString(16)} unaligned (L2 offset: 0x${l2Offset.toString(16)}, L2 index: 0x${j.toString(16)})`,
        );
      }
      internals.checkOverlap(offset, cs);
      await dev.dataStorage.writeZeroes(offset, cs, false);
      writeL2Entry(table, j, layout, makeEntry(offset, { copied: l2Refcount === 1 }));
      dirty = true;
    }
    if (dirty) {
      if (active) {
        // The zeros must be on disk before the L2 entries that stop saying "zero".
        await dev.dataStorage.flush();
        dev.l2Cache.markDirty(l2Offset);
      } else {
        await refcounts.cache.flush();
        await dev.dataStorage.flush();
        internals.checkOverlap(l2Offset, cs);
        await dev.storage.write(table, l2Offset);
      }
    }
    visited.n++;
    cb(visited.n, total);
  }
}
