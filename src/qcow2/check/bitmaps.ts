// Persistent dirty bitmaps in a check (QEMU 7.2 qcow2-bitmap.c): counting the clusters of the
// bitmap directory, the bitmap tables and the bitmap data (qcow2_check_bitmaps_refcounts), and
// the validation QEMU performs when it opens an image with bitmaps (qcow2_load_dirty_bitmaps),
// which makes a broken bitmap directory an open error rather than a check finding.

import { CorruptImageError, readU32BE } from '../../core/index.js';
import { decodeBitmapDirectory, BME_FLAG_IN_USE, type Qcow2Bitmap } from '../bitmap-directory.js';
import { MAX_BITMAP_DIRECTORY_SIZE } from '../constants.js';
import type { Qcow2Device } from '../qcow2-device.js';
import { incRefcounts, type WorkBudget } from './accounting.js';
import type { CheckContext } from './context.js';
import type { Imrt } from './imrt.js';
import { CheckAbort, type CheckCounts } from './types.js';

/** BME_TABLE_ENTRY_RESERVED_MASK 0xff000000000001fe and the offset mask, as halves. */
const RESERVED_HI = 0xff00_0000;
const RESERVED_LO = 0x1fe;
const OFFSET_HI = 0x00ff_ffff;
const OFFSET_LO = 0xffff_fe00;

type ReadAt = (offset: number, length: number) => Promise<Uint8Array>;

/** bitmap_list_load(): the directory, or an error with QEMU's message. */
async function loadBitmapList(device: Qcow2Device, readAt: ReadAt): Promise<Qcow2Bitmap[]> {
  const ext = device.header.bitmaps!;
  if (ext.directorySize === 0)
    throw new CorruptImageError('Requested bitmap directory size is zero');
  if (ext.directorySize > MAX_BITMAP_DIRECTORY_SIZE) {
    throw new CorruptImageError('Requested bitmap directory size is too big');
  }
  const dir = await readAt(ext.directoryOffset, ext.directorySize);
  return decodeBitmapDirectory(dir, ext.nbBitmaps, device.layout.clusterSize, device.size);
}

/** check_table_entry(). */
function tableEntryValid(hi: number, lo: number, clusterSize: number): boolean {
  if (hi & RESERVED_HI || lo & RESERVED_LO) return false;
  const offHi = hi & OFFSET_HI;
  const offLo = (lo & OFFSET_LO) >>> 0;
  if (offHi !== 0 || offLo !== 0) {
    if (lo & 1) return false; // "if offset specified, bit 0 is reserved"
    if (offLo % clusterSize !== 0) return false;
  }
  return true;
}

/** bitmap_table_load(): the table, or undefined when an entry is invalid (-EINVAL). */
async function loadBitmapTable(
  bm: Qcow2Bitmap,
  clusterSize: number,
  readAt: ReadAt,
): Promise<Uint8Array | undefined> {
  const table = await readAt(bm.tableOffset, bm.tableSize * 8);
  for (let i = 0; i < bm.tableSize; i++) {
    if (!tableEntryValid(readU32BE(table, 8 * i), readU32BE(table, 8 * i + 4), clusterSize)) {
      return undefined;
    }
  }
  return table;
}

/** qcow2_check_bitmaps_refcounts(). Throws CheckAbort where QEMU returns -errno. */
export async function checkBitmapsRefcounts(
  ctx: CheckContext,
  res: CheckCounts,
  imrt: Imrt,
  budget: WorkBudget,
): Promise<void> {
  const ext = ctx.device.header.bitmaps;
  if (!ext || ext.nbBitmaps === 0) return;
  incRefcounts(ctx, res, imrt, ext.directoryOffset, ext.directorySize);
  const readAt: ReadAt = (o, l) => ctx.readAt(o, l);
  let list: Qcow2Bitmap[];
  try {
    list = await loadBitmapList(ctx.device, readAt);
  } catch {
    res.corruptions++;
    throw new CheckAbort('EINVAL');
  }
  const cs = ctx.clusterSize;
  for (const bm of list) {
    incRefcounts(ctx, res, imrt, bm.tableOffset, bm.tableSize * 8);
    budget.spend(ctx, res, bm.tableSize * 8);
    let table: Uint8Array | undefined;
    try {
      table = await loadBitmapTable(bm, cs, readAt);
    } catch (err) {
      res.corruptions++;
      throw err instanceof CheckAbort ? err : new CheckAbort('EIO');
    }
    if (!table) {
      res.corruptions++;
      throw new CheckAbort('EINVAL');
    }
    for (let i = 0; i < bm.tableSize; i++) {
      const hi = readU32BE(table, 8 * i);
      const lo = readU32BE(table, 8 * i + 4);
      const offHi = hi & OFFSET_HI;
      const offLo = (lo & OFFSET_LO) >>> 0;
      if (offHi === 0 && offLo === 0) continue;
      incRefcounts(ctx, res, imrt, offHi * 0x1_0000_0000 + offLo, cs);
    }
  }
}

/**
 * What qcow2_load_dirty_bitmaps() refuses when QEMU opens an image (so `qemu-img check` fails
 * to open it): a broken directory, duplicate names, an unreadable or mis-sized bitmap table.
 * Throws CorruptImageError with QEMU's message.
 */
export async function validateBitmapsOnOpen(device: Qcow2Device): Promise<void> {
  const ext = device.header.bitmaps;
  if (!ext || ext.nbBitmaps === 0) return;
  const readAt: ReadAt = async (o, l) => {
    const b = new Uint8Array(l);
    await device.storage.read(b, o);
    return b;
  };
  const list = await loadBitmapList(device, readAt);
  const names = new Set<string>();
  const cs = device.layout.clusterSize;
  // Bound the tables read (65535 bitmaps may all name the same 8 MiB table).
  let bytesLeft = Math.max(16 * 2 ** 30, 16 * (await device.storage.size()));
  for (const bm of list) {
    bytesLeft -= bm.tableSize * 8;
    if (bytesLeft < 0) throw new CorruptImageError('Bitmap tables exceed what the image can hold');
    if (names.has(bm.name)) throw new CorruptImageError(`Bitmap already exists: ${bm.name}`);
    names.add(bm.name);
    if (bm.flags & BME_FLAG_IN_USE) continue; // "Data is unusable, skip loading it"
    const table = await loadBitmapTable(bm, cs, readAt);
    if (!table) {
      throw new CorruptImageError(
        `Could not read bitmap_table table from image for bitmap '${bm.name}': Invalid argument`,
      );
    }
    // load_bitmap_data(): the table must have exactly the clusters the serialized bitmap needs.
    const granularity = 2 ** bm.granularityBits;
    const bits = Math.ceil(device.size / granularity);
    const bytes = Math.ceil(bits / 64) * 8;
    if (Math.ceil(bytes / cs) !== bm.tableSize) {
      throw new CorruptImageError(
        `Could not read bitmap '${bm.name}' from image: Invalid argument`,
      );
    }
  }
}
