// Persistent bitmaps on disk: reading the directory, tables and data, and writing them back the
// way QEMU 7.2's block/qcow2-bitmap.c does, step for step, so images stay byte-compatible:
//   store:  data clusters (one allocation per dirty cluster, ascending), then the table, for
//           each bitmap in directory order; then a new directory, metadata caches flushed, the
//           header switched to it (autoclear bit set) and synced; only then the old directory and
//           the old tables and data are freed (update_ext_header_and_dir, drop_tables).
//   in use: the directory is rewritten in place between two header syncs with the autoclear
//           bit cleared, so a crash in between drops the bitmaps instead of trusting them
//           (update_ext_header_and_dir_in_place).
// A killed writer therefore leaks clusters at worst, and never leaves a bitmap that claims to be
// consistent while it is not.

import { CorruptImageError, InvalidArgumentError, withContext } from '../../core/index.js';
import { AUTOCLEAR_BITMAPS, MAX_BITMAP_DIRECTORY_SIZE, MAX_BITMAPS } from '../constants.js';
import type { Qcow2Device } from '../qcow2-device.js';
import {
  BME_FLAG_IN_USE,
  BME_MAX_PHYS_SIZE,
  BME_MAX_TABLE_SIZE,
  decodeBitmapDirectory,
  encodeBitmapDirectory,
  type Qcow2Bitmap,
} from './directory.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import {
  dataClusterOffset,
  decodeBitmapTable,
  encodeBitmapTable,
  TABLE_ENTRY_ONES,
  TABLE_ENTRY_SIZE,
} from './table.js';

/** -EINVAL as QEMU reports it after a colon. */
const EINVAL = 'Invalid argument';

function einval(message: string): CorruptImageError {
  return new CorruptImageError(`${message}: ${EINVAL}`, { code: 'VMF_QCOW2_BITMAP' });
}

/**
 * Bytes of bitmap tables and data one load may read. Every table and data cluster of a valid
 * image is a cluster of its own, so a real image never needs more than its file size; a hostile
 * one whose entries all name the same clusters would otherwise cost unbounded time and memory.
 */
export class LoadBudget {
  #left: number;
  constructor(fileSize: number) {
    this.#left = fileSize + 1024 * 1024;
  }
  spend(bytes: number): void {
    this.#left -= bytes;
    if (this.#left < 0) {
      throw new CorruptImageError('Bitmap tables and data exceed what the image can hold', {
        code: 'VMF_QCOW2_BITMAP',
      });
    }
  }
}

/** bitmap_list_load(): the directory named by the header (empty when there is none). */
export async function readBitmapList(dev: Qcow2Device): Promise<Qcow2Bitmap[]> {
  const ext = dev.header.bitmaps;
  if (!ext || ext.nbBitmaps === 0) return [];
  if (ext.directorySize === 0) {
    throw new CorruptImageError('Requested bitmap directory size is zero');
  }
  if (ext.directorySize > MAX_BITMAP_DIRECTORY_SIZE) {
    throw new CorruptImageError('Requested bitmap directory size is too big');
  }
  const dir = new Uint8Array(ext.directorySize);
  await dev.storage.read(dir, ext.directoryOffset);
  return decodeBitmapDirectory(dir, ext.nbBitmaps, dev.layout.clusterSize, dev.size);
}

/** bitmap_table_load(): the table, or undefined if an entry is invalid. */
export async function readBitmapTable(
  dev: Qcow2Device,
  table: { tableOffset: number; tableSize: number },
  budget?: LoadBudget,
): Promise<number[] | undefined> {
  const bytes = table.tableSize * TABLE_ENTRY_SIZE;
  budget?.spend(bytes);
  const buf = new Uint8Array(bytes);
  await dev.storage.read(buf, table.tableOffset);
  return decodeBitmapTable(buf, table.tableSize, dev.layout.clusterSize);
}

/** Clusters of serialized data a bitmap needs: its table size (size_to_clusters). */
export function bitmapTableSize(bitmap: DirtyBitmap, clusterSize: number): number {
  return Math.ceil(bitmap.serializedSize / clusterSize);
}

/**
 * load_bitmap(): a DirtyBitmap for directory entry `bm`, its bits read from the image unless the
 * entry is in use ("Data is unusable, skip loading it").
 */
export async function loadBitmap(
  dev: Qcow2Device,
  bm: Qcow2Bitmap,
  budget: LoadBudget,
): Promise<DirtyBitmap> {
  const bitmap = new DirtyBitmap({
    name: bm.name,
    granularity: 2 ** bm.granularityBits,
    size: dev.size,
  });
  if (bm.flags & BME_FLAG_IN_USE) return bitmap;
  const table = await readBitmapTable(dev, bm, budget);
  if (!table) {
    throw einval(`Could not read bitmap_table table from image for bitmap '${bm.name}'`);
  }
  // load_bitmap_data()
  const cs = dev.layout.clusterSize;
  const tabSize = bitmapTableSize(bitmap, cs);
  if (tabSize !== table.length || tabSize > BME_MAX_TABLE_SIZE) {
    throw einval(`Could not read bitmap '${bm.name}' from image`);
  }
  const buf = new Uint8Array(cs);
  for (let i = 0; i < table.length;) {
    const entry = table[i]!;
    if (entry === TABLE_ENTRY_ONES) {
      // A run of all-ones entries at once, so whole chunks can stay shared.
      let end = i + 1;
      while (end < table.length && table[end] === TABLE_ENTRY_ONES) end++;
      bitmap.setSerializedOnes(i * cs, (end - i) * cs);
      i = end;
      continue;
    }
    if (entry !== 0) {
      budget.spend(cs);
      await dev.storage.read(buf, entry);
      bitmap.orSerialized(i * cs, buf);
    }
    i++;
  }
  return bitmap;
}

/** qcow2_alloc_clusters(bs, bytes). */
function allocClusters(dev: Qcow2Device, bytes: number): Promise<number> {
  return dev.refcounts.allocClusters(Math.ceil(bytes / dev.layout.clusterSize));
}

/**
 * qcow2_free_clusters() of clusters nothing on disk references any more: the refcount drops at
 * once, so later allocations of the same session reuse them as QEMU's do. `discardAlways` is
 * QCOW2_DISCARD_ALWAYS (bitmap data): the freed clusters are punched out of the file.
 */
export async function freeClusters(
  dev: Qcow2Device,
  offset: number,
  length: number,
  discardAlways: boolean,
): Promise<void> {
  if (length <= 0) return;
  const refcounts = dev.refcounts;
  await refcounts.update(offset, length, -1);
  if (discardAlways && refcounts.onClusterFreed) {
    const cs = dev.layout.clusterSize;
    for (let c = Math.floor(offset / cs); c * cs < offset + length; c++) {
      if ((await refcounts.get(c)) === 0) await refcounts.onClusterFreed(c * cs, cs);
    }
  }
}

/** clear_bitmap_table(): free the data clusters a table names. */
async function freeTableData(dev: Qcow2Device, table: number[]): Promise<void> {
  for (let i = 0; i < table.length; i++) {
    const off = dataClusterOffset(table[i]!);
    if (off === 0) continue;
    await freeClusters(dev, off, dev.layout.clusterSize, true);
    table[i] = 0;
  }
}

/** free_bitmap_clusters(): a bitmap's data clusters, then its table. Failures are ignored. */
export async function freeBitmapClusters(
  dev: Qcow2Device,
  table: { tableOffset: number; tableSize: number },
): Promise<void> {
  if (table.tableSize === 0 || table.tableOffset === 0) return;
  const entries = await readBitmapTable(dev, table).catch(() => undefined);
  if (!entries) return;
  await freeTableData(dev, entries);
  await freeClusters(dev, table.tableOffset, table.tableSize * TABLE_ENTRY_SIZE, false);
}

/** store_bitmap_data(): write the dirty clusters of the serialized bitmap; returns the table. */
async function storeBitmapData(dev: Qcow2Device, bitmap: DirtyBitmap): Promise<number[]> {
  const cs = dev.layout.clusterSize;
  const tbSize = bitmapTableSize(bitmap, cs);
  if (tbSize > BME_MAX_TABLE_SIZE || tbSize * cs > BME_MAX_PHYS_SIZE) {
    throw new InvalidArgumentError(`Bitmap '${bitmap.name}' is too big`);
  }
  // g_try_new0(uint64_t, 0) is NULL: an empty image's bitmap cannot be stored.
  if (tbSize === 0) throw new InvalidArgumentError('No memory');
  const table = new Array<number>(tbSize).fill(0);
  const buf = new Uint8Array(cs);
  try {
    for (const cluster of bitmap.dirtyBlocks(cs)) {
      let off: number;
      try {
        off = await allocClusters(dev, cs);
      } catch (err) {
        throw withContext(err, `Failed to allocate clusters for bitmap '${bitmap.name}'`);
      }
      table[cluster] = off;
      bitmap.readSerialized(cluster * cs, buf);
      dev.checkMetadataWrite(off, cs);
      try {
        await dev.storage.write(buf, off);
      } catch (err) {
        throw withContext(err, `Failed to write bitmap '${bitmap.name}' to file`);
      }
    }
  } catch (err) {
    await freeTableData(dev, table).catch(() => undefined);
    throw err;
  }
  return table;
}

/** store_bitmap(): data, then the table; sets the entry's table offset and size. */
export async function storeBitmap(
  dev: Qcow2Device,
  bm: Qcow2Bitmap,
  bitmap: DirtyBitmap,
): Promise<void> {
  const table = await storeBitmapData(dev, bitmap);
  const bytes = encodeBitmapTable(table);
  let tbOffset = 0;
  try {
    try {
      tbOffset = await allocClusters(dev, bytes.length);
    } catch (err) {
      throw withContext(err, `Failed to allocate clusters for bitmap '${bitmap.name}'`);
    }
    dev.checkMetadataWrite(tbOffset, bytes.length);
    try {
      // Exactly the table's bytes, not the whole cluster (bdrv_pwrite of tb_size * 8).
      await dev.storage.write(bytes, tbOffset);
    } catch (err) {
      throw withContext(err, `Failed to write bitmap '${bitmap.name}' to file`);
    }
  } catch (err) {
    await freeTableData(dev, table).catch(() => undefined);
    if (tbOffset > 0) await freeClusters(dev, tbOffset, bytes.length, false).catch(() => undefined);
    throw err;
  }
  bm.tableOffset = tbOffset;
  bm.tableSize = table.length;
}

/** update_header_sync(): rewrite the header from memory, then flush the image file. */
async function updateHeaderSync(dev: Qcow2Device): Promise<void> {
  await dev.rewriteHeader();
  await dev.storage.flush();
}

/**
 * bitmap_list_store(): write the directory, in place (same size, same offset) or into newly
 * allocated clusters. Returns where it went.
 */
async function writeDirectory(
  dev: Qcow2Device,
  list: readonly Qcow2Bitmap[],
  inPlace: boolean,
): Promise<{ offset: number; size: number }> {
  const dir = encodeBitmapDirectory(list, dev.layout.clusterSize, dev.size);
  if (!dir || dir.length > MAX_BITMAP_DIRECTORY_SIZE) throw einvalError();
  const ext = dev.header.bitmaps;
  let offset: number;
  if (inPlace) {
    if (!ext || ext.directorySize !== dir.length || ext.directoryOffset === 0) throw einvalError();
    offset = ext.directoryOffset;
  } else {
    offset = await allocClusters(dev, dir.length);
  }
  try {
    dev.checkMetadataWrite(offset, dir.length);
    await dev.storage.write(dir, offset);
  } catch (err) {
    if (!inPlace) await freeClusters(dev, offset, dir.length, false).catch(() => undefined);
    throw err;
  }
  return { offset, size: dir.length };
}

function einvalError(): CorruptImageError {
  return new CorruptImageError(EINVAL, { code: 'VMF_QCOW2_BITMAP' });
}

/**
 * update_ext_header_and_dir_in_place(): rewrite the directory (new flags only) where it is.
 * The autoclear bit is off while the directory changes: if we die in between, QEMU drops every
 * bitmap of the image instead of trusting a half-written directory.
 */
export async function updateDirectoryInPlace(
  dev: Qcow2Device,
  list: readonly Qcow2Bitmap[],
): Promise<void> {
  const h = dev.header;
  if (
    (h.autoclearFeatures & AUTOCLEAR_BITMAPS) === 0n ||
    list.length === 0 ||
    list.length !== h.bitmaps?.nbBitmaps
  ) {
    throw einvalError();
  }
  h.autoclearFeatures &= ~AUTOCLEAR_BITMAPS;
  await updateHeaderSync(dev);
  await writeDirectory(dev, list, true);
  await updateHeaderSync(dev);
  h.autoclearFeatures |= AUTOCLEAR_BITMAPS;
  await updateHeaderSync(dev);
}

/**
 * update_ext_header_and_dir(): a new directory for `list` (or none when it is empty), the header
 * switched to it, then the old directory freed. Caller holds the metadata lock.
 */
export async function updateDirectory(
  dev: Qcow2Device,
  list: readonly Qcow2Bitmap[],
): Promise<void> {
  const h = dev.header;
  const old = h.bitmaps;
  const oldAutoclear = h.autoclearFeatures;
  let created: { offset: number; size: number } | undefined;
  try {
    if (list.length > 0) {
      if (list.length > MAX_BITMAPS) throw einvalError();
      created = await writeDirectory(dev, list, false);
      // Refcounts of everything just allocated reach the disk before the header names it.
      await dev.flushMetadataLocked();
      h.autoclearFeatures |= AUTOCLEAR_BITMAPS;
      h.bitmaps = {
        nbBitmaps: list.length,
        directorySize: created.size,
        directoryOffset: created.offset,
      };
    } else {
      h.autoclearFeatures &= ~AUTOCLEAR_BITMAPS;
      h.bitmaps = undefined;
    }
    await updateHeaderSync(dev);
  } catch (err) {
    if (created) await freeClusters(dev, created.offset, created.size, false).catch(() => {});
    h.bitmaps = old;
    h.autoclearFeatures = oldAutoclear;
    throw err;
  }
  if (old && old.directorySize > 0) {
    await freeClusters(dev, old.directoryOffset, old.directorySize, false);
  }
}
