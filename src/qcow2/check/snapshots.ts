// The snapshot table during a check: qcow2_check_read_snapshot_table(),
// qcow2_do_read_snapshots() in repair mode, qcow2_check_fix_snapshot_table() and
// qcow2_write_snapshots() of QEMU 7.2's qcow2-snapshot.c. In check mode the table is read here,
// not at open, so a broken table can be reported and repaired: overhanging entries are dropped
// (the header's count is updated at once, leaking their clusters for the refcount check to
// reclaim), oversized extra data is cut to 1 KiB, and v3 entries missing the 16 bytes of extra
// data the spec requires are completed; the table is then written anew.

import { decodeByteString, readU32BE, VmforgeError } from '../../core/index.js';
import { MAX_SNAPSHOT_EXTRA_DATA, MAX_SNAPSHOTS, MAX_SNAPSHOTS_SIZE } from '../constants.js';
import type { Qcow2Snapshot } from '../snapshot-table.js';
import { INT64_MAX, type CheckContext, type CheckSnapshot } from './context.js';
import { CheckAbort, FIX_ERRORS, strerror, type CheckCounts, type FixMode } from './types.js';

const ENTRY_HEADER = 40;
const KNOWN_EXTRA = 24;
const INT_MAX = 2 ** 31 - 1;

/** A read failure of qcow2_do_read_snapshots(): message plus the hint QEMU appends. */
class SnapshotReadError extends CheckAbort {
  readonly hint: string | undefined;
  constructor(errno: CheckAbort['errno'], message: string, hint?: string) {
    super(errno, message);
    this.hint = hint;
  }
}

/** Sequential reads through a window, so 65536 small entries cost a few large reads. */
class WindowReader {
  readonly #ctx: CheckContext;
  #start = -1;
  #buf: Uint8Array = new Uint8Array(0);

  constructor(ctx: CheckContext) {
    this.#ctx = ctx;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    if (
      this.#start < 0 ||
      offset < this.#start ||
      offset + length > this.#start + this.#buf.length
    ) {
      const size = Math.max(length, 1 << 20);
      try {
        this.#buf = await this.#ctx.readAt(offset, size);
      } catch (err) {
        // A window past BDRV_MAX_LENGTH may fail where the exact read would not.
        if (size === length) throw err;
        this.#buf = await this.#ctx.readAt(offset, length);
      }
      this.#start = offset;
    }
    const at = offset - this.#start;
    return this.#buf.subarray(at, at + length);
  }
}

const cString = (b: Uint8Array): Uint8Array => {
  const nul = b.indexOf(0);
  return (nul >= 0 ? b.subarray(0, nul) : b).slice();
};

/** A snapshot id or name as QEMU prints it (invalid UTF-8 survives as escapes). */
export const snapshotText = (b: Uint8Array): string => decodeByteString(b);

interface ReadOutcome {
  reduced: number;
  dropped: number;
}

/** qcow2_do_read_snapshots(); throws SnapshotReadError on failure. */
async function readSnapshots(ctx: CheckContext, repair: boolean): Promise<ReadOutcome> {
  const out: ReadOutcome = { reduced: 0, dropped: 0 };
  ctx.snapshots = [];
  if (!ctx.nbSnapshots) {
    ctx.snapshotsSize = 0;
    return out;
  }
  // Offsets below are relative to the table start (validated: cluster aligned and at most
  // INT64_MAX - nb * 40), so rounding them up to 8 rounds the absolute offset too.
  const base = ctx.snapshotsOffset;
  const huge = base > BigInt(Number.MAX_SAFE_INTEGER - MAX_SNAPSHOTS_SIZE * 2);
  const reader = new WindowReader(ctx);
  const read = async (rel: number, length: number): Promise<Uint8Array> => {
    try {
      if (huge) return await ctx.readAt(base + BigInt(rel), length);
      return await reader.read(Number(base) + rel, length);
    } catch (err) {
      const errno = err instanceof CheckAbort ? err.errno : 'EIO';
      throw new SnapshotReadError(errno, `Failed to read snapshot table: ${strerror(errno)}`);
    }
  };
  const imageSize = BigInt(Math.floor(ctx.device.header.size / 512) * 512);
  let offset = 0;
  let tableLength = 0;
  for (let i = 0; i < ctx.nbSnapshots; i++) {
    const preOffset = offset;
    tableLength = Math.ceil(tableLength / 8) * 8;
    offset = Math.ceil(offset / 8) * 8;
    const h = new DataView((await read(offset, ENTRY_HEADER)).slice().buffer);
    offset += ENTRY_HEADER;
    const idSize = h.getUint16(12);
    const nameSize = h.getUint16(14);
    let extraDataSize = h.getUint32(36);
    let truncateUnknown = false;
    if (extraDataSize > MAX_SNAPSHOT_EXTRA_DATA) {
      if (!repair) {
        throw new SnapshotReadError(
          'EFBIG',
          `Too much extra metadata in snapshot table entry ${i}`,
          'You can force-remove this extra metadata with qemu-img check -r all',
        );
      }
      ctx.emit(
        `Discarding too much extra metadata in snapshot table entry ${i} (${extraDataSize} > ${MAX_SNAPSHOT_EXTRA_DATA})`,
      );
      out.dropped++;
      truncateUnknown = true;
    }
    const known = Math.min(KNOWN_EXTRA, extraDataSize);
    const extra = new Uint8Array(KNOWN_EXTRA);
    extra.set(await read(offset, known));
    offset += known;
    const ev = new DataView(extra.buffer);
    const sn: CheckSnapshot = {
      l1TableOffset: h.getBigUint64(0),
      l1Size: h.getUint32(8),
      id: new Uint8Array(0),
      name: new Uint8Array(0),
      vmStateSize: extraDataSize >= 8 ? ev.getBigUint64(0) : BigInt(h.getUint32(32)),
      dateSec: h.getUint32(16),
      dateNsec: h.getUint32(20),
      vmClockNsec: h.getBigUint64(24),
      diskSize: extraDataSize >= 16 ? ev.getBigUint64(8) : imageSize,
      icount: extraDataSize >= 24 ? ev.getBigUint64(16) : 0xffff_ffff_ffff_ffffn,
      extraDataSize,
      unknownExtraData: new Uint8Array(0),
    };
    if (extraDataSize > KNOWN_EXTRA) {
      const extraEnd = offset + extraDataSize - KNOWN_EXTRA;
      if (truncateUnknown) sn.extraDataSize = extraDataSize = MAX_SNAPSHOT_EXTRA_DATA;
      sn.unknownExtraData = (await read(offset, extraDataSize - KNOWN_EXTRA)).slice();
      offset = extraEnd;
    }
    sn.id = cString(await read(offset, idSize));
    offset += idSize;
    sn.name = cString(await read(offset, nameSize));
    offset += nameSize;
    ctx.snapshots.push(sn);

    tableLength += ENTRY_HEADER + extraDataSize + idSize + nameSize;
    if (tableLength > MAX_SNAPSHOTS_SIZE || offset > INT_MAX) {
      const over = ctx.nbSnapshots - i;
      if (!repair) {
        throw new SnapshotReadError(
          'EFBIG',
          'Snapshot table is too big',
          `You can force-remove all ${over} overhanging snapshots with qemu-img check -r all`,
        );
      }
      ctx.emit(`Discarding ${over} overhanging snapshots (snapshot table is too big)`);
      out.reduced += over;
      ctx.snapshots.pop();
      ctx.nbSnapshots = i;
      offset = preOffset;
      break;
    }
  }
  ctx.snapshotsSize = offset;
  return out;
}

/** Keep the device's header (what qcow2_update_header() writes) in step with the check. */
function syncHeader(ctx: CheckContext): void {
  const h = ctx.device.header;
  h.nbSnapshots = ctx.nbSnapshots;
  h.snapshotsOffset = Number(ctx.snapshotsOffset);
}

/** qcow2_check_read_snapshot_table(). Throws CheckAbort when the table cannot be read. */
export async function checkReadSnapshotTable(
  ctx: CheckContext,
  res: CheckCounts,
  fix: FixMode,
): Promise<void> {
  let reduced = 0;
  let pointer: Uint8Array;
  try {
    pointer = await ctx.readAt(60, 12);
  } catch (err) {
    res.checkErrors++;
    const errno = err instanceof CheckAbort ? err.errno : 'EIO';
    ctx.emit(
      `ERROR failed to read the snapshot table pointer from the image header: ${strerror(errno)}`,
    );
    throw err;
  }
  ctx.nbSnapshots = readU32BE(pointer, 0);
  ctx.snapshotsOffset = new DataView(pointer.buffer).getBigUint64(4);

  if (ctx.nbSnapshots > MAX_SNAPSHOTS && fix & FIX_ERRORS) {
    ctx.emit(`Discarding ${ctx.nbSnapshots - MAX_SNAPSHOTS} overhanging snapshots`);
    reduced += ctx.nbSnapshots - MAX_SNAPSHOTS;
    ctx.nbSnapshots = MAX_SNAPSHOTS;
  }

  // qcow2_validate_table(..., sizeof(QCowSnapshotHeader), 40 * QCOW_MAX_SNAPSHOTS, "snapshot table")
  let invalid: CheckAbort | undefined;
  if (ctx.nbSnapshots > MAX_SNAPSHOTS) {
    invalid = new CheckAbort('EFBIG', 'snapshot table too large');
  } else if (
    INT64_MAX - BigInt(ctx.nbSnapshots * ENTRY_HEADER) < ctx.snapshotsOffset ||
    ctx.snapshotsOffset % BigInt(ctx.clusterSize) !== 0n
  ) {
    invalid = new CheckAbort('EINVAL', 'snapshot table offset invalid');
  }
  if (invalid) {
    res.checkErrors++;
    ctx.report(`ERROR ${invalid.message}`);
    if (ctx.nbSnapshots > MAX_SNAPSHOTS) {
      ctx.emit(
        `You can force-remove all ${ctx.nbSnapshots - MAX_SNAPSHOTS} overhanging snapshots with qemu-img check -r all`,
      );
    }
    // "We did not read the snapshot table, so invalidate this information"
    ctx.snapshotsOffset = 0n;
    ctx.nbSnapshots = 0;
    syncHeader(ctx);
    throw invalid;
  }

  let outcome: ReadOutcome;
  try {
    outcome = await readSnapshots(ctx, (fix & FIX_ERRORS) !== 0);
  } catch (err) {
    if (!(err instanceof CheckAbort)) throw err;
    res.checkErrors++;
    const hint = err instanceof SnapshotReadError && err.hint ? `\n${err.hint}` : '';
    ctx.report(`ERROR failed to read the snapshot table: ${err.message}${hint}`);
    ctx.snapshots = [];
    ctx.snapshotsOffset = 0n;
    ctx.nbSnapshots = 0;
    ctx.snapshotsSize = 0;
    syncHeader(ctx);
    throw err;
  }
  reduced += outcome.reduced;
  res.corruptions += reduced + outcome.dropped;
  syncHeader(ctx);

  if (reduced) {
    // Update the header now: the refcount check relies on nb_snapshots matching the image.
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, ctx.nbSnapshots);
    try {
      await ctx.writeAt(60, b, true);
    } catch (err) {
      res.checkErrors++;
      const errno = err instanceof CheckAbort ? err.errno : 'EIO';
      ctx.emit(`ERROR failed to update the snapshot count in the image header: ${strerror(errno)}`);
      throw err;
    }
    res.corruptionsFixed += reduced;
    res.corruptions -= reduced;
  }

  // "All of v3 images' snapshot table entries need to have at least 16 bytes of extra data."
  if (ctx.device.header.version >= 3) {
    ctx.snapshots.forEach((sn, i) => {
      if (sn.extraDataSize < 16) {
        res.corruptions++;
        ctx.emit(
          `${fix & FIX_ERRORS ? 'Repairing' : 'ERROR'} snapshot table entry ${i} is incomplete`,
        );
      }
    });
  }
}

/** qcow2_check_fix_snapshot_table(). */
export async function checkFixSnapshotTable(
  ctx: CheckContext,
  res: CheckCounts,
  fix: FixMode,
): Promise<void> {
  if (!res.corruptions || !(fix & FIX_ERRORS)) return;
  try {
    await writeSnapshots(ctx);
  } catch (err) {
    res.checkErrors++;
    const errno = err instanceof CheckAbort ? err.errno : 'EIO';
    ctx.emit(`ERROR failed to update snapshot table: ${strerror(errno)}`);
    throw err;
  }
  res.corruptionsFixed += res.corruptions;
  res.corruptions = 0;
}

/** One entry as qcow2_write_snapshots() writes it (without the padding before the next). */
function encodeEntry(sn: CheckSnapshot): Uint8Array {
  const extraSize = Math.max(KNOWN_EXTRA, sn.extraDataSize);
  const unknown = sn.extraDataSize > KNOWN_EXTRA ? sn.unknownExtraData : new Uint8Array(0);
  const buf = new Uint8Array(
    ENTRY_HEADER + KNOWN_EXTRA + unknown.length + sn.id.length + sn.name.length,
  );
  const v = new DataView(buf.buffer);
  v.setBigUint64(0, sn.l1TableOffset);
  v.setUint32(8, sn.l1Size);
  v.setUint16(12, sn.id.length);
  v.setUint16(14, sn.name.length);
  v.setUint32(16, sn.dateSec);
  v.setUint32(20, sn.dateNsec);
  v.setBigUint64(24, sn.vmClockNsec);
  // "If it doesn't fit in 32 bit, older implementations should treat it as a disk-only snapshot"
  v.setUint32(32, sn.vmStateSize <= 0xffff_ffffn ? Number(sn.vmStateSize) : 0);
  v.setUint32(36, extraSize);
  v.setBigUint64(40, sn.vmStateSize);
  v.setBigUint64(48, sn.diskSize);
  v.setBigUint64(56, sn.icount);
  let p = ENTRY_HEADER + KNOWN_EXTRA;
  buf.set(unknown, p);
  p += unknown.length;
  buf.set(sn.id, p);
  p += sn.id.length;
  buf.set(sn.name, p);
  return buf;
}

/** qcow2_write_snapshots(): a new table in freshly allocated clusters, then the header. */
async function writeSnapshots(ctx: CheckContext): Promise<void> {
  const refcounts = ctx.device.refcounts;
  const cs = ctx.clusterSize;
  const entries = ctx.snapshots.slice(0, ctx.nbSnapshots);
  let size = 0;
  const encoded: { at: number; bytes: Uint8Array }[] = [];
  for (const sn of entries) {
    size = Math.ceil(size / 8) * 8;
    const bytes = encodeEntry(sn);
    encoded.push({ at: size, bytes });
    size += bytes.length;
    if (size > MAX_SNAPSHOTS_SIZE) throw new CheckAbort('EFBIG');
  }

  let newOffset: number;
  try {
    newOffset = await refcounts.allocClusters(Math.ceil(size / cs));
  } catch {
    throw new CheckAbort('EIO');
  }
  try {
    await refcounts.cache.flush();
    await ctx.storage.flush();
    // "The snapshot list position has not yet been updated, so these clusters must indeed be
    // completely free"
    await ctx.preWriteOverlapCheck(0, newOffset, size);
    for (const e of encoded) await ctx.writeAt(newOffset + e.at, e.bytes);
    await ctx.storage.flush();
    const hdr = new Uint8Array(12);
    const hv = new DataView(hdr.buffer);
    hv.setUint32(0, ctx.nbSnapshots);
    hv.setBigUint64(4, BigInt(newOffset));
    await ctx.writeAt(60, hdr, true);
  } catch (err) {
    await freeClusters(ctx, newOffset, size);
    throw err instanceof CheckAbort ? err : new CheckAbort('EIO');
  }

  await freeClusters(ctx, Number(ctx.snapshotsOffset), ctx.snapshotsSize);
  ctx.snapshotsOffset = BigInt(newOffset);
  ctx.snapshotsSize = size;
  syncHeader(ctx);
}

/** qcow2_free_clusters(): an immediate refcount decrement; failures are only printed. */
async function freeClusters(ctx: CheckContext, offset: number, size: number): Promise<void> {
  if (size <= 0) return;
  const refcounts = ctx.device.refcounts;
  try {
    await refcounts.update(offset, size, -1);
  } catch (err) {
    ctx.emit(`qcow2_free_clusters failed: ${strerror(updateErrno(err))}`);
    return;
  }
  // Discard passthrough (snapshot and "always" discards are on by default): freed clusters are
  // punched out of the file.
  const cs = ctx.clusterSize;
  for (let c = Math.floor(offset / cs); c <= Math.floor((offset + size - 1) / cs); c++) {
    if ((await refcounts.get(c)) === 0) await ctx.discard(c * cs, cs);
  }
}

/**
 * The errno update_refcount() fails with: EINVAL for an underflow or overflow, EAGAIN when a
 * refcount block had to be allocated first (QEMU's alloc_refcount_block() asks the caller to
 * retry), EFBIG when the refcount table cannot grow to cover the offset, EIO otherwise.
 */
export function updateErrno(err: unknown): CheckAbort['errno'] {
  if (!(err instanceof VmforgeError)) return 'EAGAIN';
  if (err.code === 'VMF_QCOW2_REFCOUNT') return 'EINVAL';
  // The refcount table cannot grow that far (alloc_refcount_block: -EFBIG).
  if (/too large|exceed the maximum/.test(err.message)) return 'EFBIG';
  return 'EIO';
}

/** The check's snapshot list in the engine's form (for the device after a repair). */
export function toEngineSnapshots(ctx: CheckContext): Qcow2Snapshot[] {
  return ctx.snapshots.slice(0, ctx.nbSnapshots).map((sn) => ({
    l1TableOffset: Number(sn.l1TableOffset),
    l1Size: sn.l1Size,
    id: snapshotText(sn.id),
    name: snapshotText(sn.name),
    dateSec: sn.dateSec,
    dateNsec: sn.dateNsec,
    vmClockNsec: sn.vmClockNsec,
    vmStateSize: Number(sn.vmStateSize),
    diskSize: Number(sn.diskSize),
    icount: sn.icount === 0xffff_ffff_ffff_ffffn ? undefined : Number(sn.icount),
    extraDataSize: sn.extraDataSize,
    unknownExtraData: sn.unknownExtraData,
  }));
}
