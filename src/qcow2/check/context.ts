// The state a qcow2 check works on, mirroring the parts of QEMU's BDRVQcow2State that
// qcow2-refcount.c's check functions read and write: the refcount table (kept as raw 64-bit
// entries, because corrupt entries are printed exactly), the active L1 table (shared with the
// device), the snapshot table as the check read it, the image file length as the block layer
// reports it, and the "signaled corruption" state of qcow2_signal_corruption().
//
// I/O follows the block layer's rules: reads beyond the end of the file return zeros, requests
// beyond BDRV_MAX_LENGTH fail with EIO, writes beyond the end grow the file.

import type { Storage } from '../../block/storage.js';
import { readU32BE } from '../../core/index.js';
import { AUTOCLEAR_BITMAPS, INCOMPAT_CORRUPT } from '../constants.js';
import { hasFeature } from '../header.js';
import type { Layout } from '../layout.js';
import type { Qcow2Device } from '../qcow2-device.js';
import { getRefcount as readRefcountEntry } from '../refcount.js';
import { altHex, asInt64 } from './u64.js';
import { CheckAbort, errnoOf, type CheckMessage, type MessageSink } from './types.js';

/** BDRV_MAX_LENGTH: QEMU_ALIGN_DOWN(INT64_MAX, 1 GiB). */
export const BDRV_MAX_LENGTH = (1n << 63n) - (1n << 30n);
export const INT64_MAX = (1n << 63n) - 1n;
const REFT_OFFSET_MASK = 0xffff_ffff_ffff_fe00n;
const REFT_RESERVED_MASK = 0x1ffn;

/** A snapshot table entry as qcow2_do_read_snapshots() keeps it (QCowSnapshot). */
export interface CheckSnapshot {
  l1TableOffset: bigint;
  l1Size: number;
  /** id_str and name: bytes up to the first NUL (C strings). */
  id: Uint8Array;
  name: Uint8Array;
  vmStateSize: bigint;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: bigint;
  diskSize: bigint;
  icount: bigint;
  extraDataSize: number;
  unknownExtraData: Uint8Array;
}

/** QCOW2_OL_* sections of the default "cached" overlap-check template, in QEMU's test order. */
export const OL_MAIN_HEADER = 1 << 0;
export const OL_ACTIVE_L1 = 1 << 1;
export const OL_ACTIVE_L2 = 1 << 2;
export const OL_REFCOUNT_TABLE = 1 << 3;
export const OL_REFCOUNT_BLOCK = 1 << 4;
export const OL_SNAPSHOT_TABLE = 1 << 5;
export const OL_INACTIVE_L1 = 1 << 6;
export const OL_INACTIVE_L2 = 1 << 7;
export const OL_BITMAP_DIRECTORY = 1 << 8;
const OL_CACHED =
  OL_MAIN_HEADER |
  OL_ACTIVE_L1 |
  OL_REFCOUNT_TABLE |
  OL_SNAPSHOT_TABLE |
  OL_BITMAP_DIRECTORY |
  OL_ACTIVE_L2 |
  OL_REFCOUNT_BLOCK |
  OL_INACTIVE_L1;
const OL_NAMES: Record<number, string> = {
  [OL_MAIN_HEADER]: 'qcow2_header',
  [OL_ACTIVE_L1]: 'active L1 table',
  [OL_ACTIVE_L2]: 'active L2 table',
  [OL_REFCOUNT_TABLE]: 'refcount table',
  [OL_REFCOUNT_BLOCK]: 'refcount block',
  [OL_SNAPSHOT_TABLE]: 'snapshot table',
  [OL_INACTIVE_L1]: 'inactive L1 table',
  [OL_INACTIVE_L2]: 'inactive L2 table',
  [OL_BITMAP_DIRECTORY]: 'bitmap directory',
};

/** Per-device state that outlives one check (QEMU keeps it in BDRVQcow2State / bs->drv). */
interface DeviceCheckState {
  signaledCorruption: boolean;
  /** A fatal corruption was signaled: QEMU sets bs->drv = NULL and the node is dead. */
  unusable: boolean;
}
const deviceStates = new WeakMap<Qcow2Device, DeviceCheckState>();

export function deviceCheckState(device: Qcow2Device): DeviceCheckState {
  let st = deviceStates.get(device);
  if (!st) {
    st = { signaledCorruption: false, unusable: false };
    deviceStates.set(device, st);
  }
  return st;
}

/** Reftable entry decoded once for the hot paths. */
const RT_NONE = 0;
const RT_OK = 1;
const RT_UNALIGNED = 2;
/** Aligned but beyond 2^53: reads as zeros (or fails with EIO past BDRV_MAX_LENGTH). */
const RT_HUGE = 3;

const roundUp512 = (n: number): number => Math.ceil(n / 512) * 512;

export class CheckContext {
  readonly device: Qcow2Device;
  readonly storage: Storage;
  readonly layout: Layout;
  readonly clusterSize: number;
  readonly clusterBits: number;
  readonly writable: boolean;
  readonly hasDataFile: boolean;
  readonly #emit: MessageSink;
  readonly #state: DeviceCheckState;

  /** bdrv_getlength(bs->file): the file length rounded up to whole sectors. */
  fileLength = 0;

  /** s->refcount_table: raw entries. */
  reftable: BigUint64Array = new BigUint64Array(0);
  #rtState: Uint8Array = new Uint8Array(0);
  #rtOffset: Float64Array = new Float64Array(0);

  /** Snapshot table as read by the check (s->nb_snapshots, s->snapshots_offset, ...). */
  snapshots: CheckSnapshot[] = [];
  nbSnapshots = 0;
  snapshotsOffset = 0n;
  snapshotsSize = 0;

  /** Zero refcount block for blocks that lie beyond anything readable. */
  readonly #zeroBlock: Uint8Array;

  constructor(device: Qcow2Device, emit: MessageSink) {
    this.device = device;
    this.storage = device.storage;
    this.layout = device.layout;
    this.clusterSize = device.layout.clusterSize;
    this.clusterBits = device.layout.clusterBits;
    this.writable = !device.readOnly;
    this.hasDataFile = hasFeature.dataFile(device.header);
    this.#emit = emit;
    this.#state = deviceCheckState(device);
    this.#zeroBlock = new Uint8Array(this.clusterSize);
  }

  /** Load what QEMU holds in memory since open: the file length and the refcount table. */
  async init(): Promise<void> {
    await this.refreshFileLength();
    const h = this.device.header;
    const bytes = new Uint8Array(h.refcountTableClusters * this.clusterSize);
    if (bytes.length > 0) await this.storage.read(bytes, h.refcountTableOffset);
    const table = new BigUint64Array(bytes.length / 8);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < table.length; i++) table[i] = view.getBigUint64(i * 8);
    this.setReftable(table);
  }

  emit(text: string): void {
    this.#emit({ text });
  }

  /** An error_report() line (the CLI prefixes the program name). */
  report(text: string): void {
    const m: CheckMessage = { text, report: true };
    this.#emit(m);
  }

  async refreshFileLength(): Promise<void> {
    this.fileLength = roundUp512(await this.storage.size());
  }

  get unusable(): boolean {
    return this.#state.unusable;
  }

  // -------------------------------------------------------------------------------------------
  // Refcount table

  get reftableOffset(): number {
    return this.device.header.refcountTableOffset;
  }

  /** Replace s->refcount_table (open, or after a rebuild). */
  setReftable(table: BigUint64Array): void {
    this.reftable = table;
    this.#rtState = new Uint8Array(table.length);
    this.#rtOffset = new Float64Array(table.length);
    const cs = BigInt(this.clusterSize);
    for (let i = 0; i < table.length; i++) {
      const off = table[i]! & REFT_OFFSET_MASK;
      if (off === 0n) continue;
      if (off % cs !== 0n) this.#rtState[i] = RT_UNALIGNED;
      else if (off + cs > BigInt(Number.MAX_SAFE_INTEGER)) this.#rtState[i] = RT_HUGE;
      else this.#rtState[i] = RT_OK;
      this.#rtOffset[i] = Number(off);
    }
  }

  /** Masked offset of reftable entry `i` (REFT_OFFSET_MASK). */
  reftableEntryOffset(i: number): bigint {
    return this.reftable[i]! & REFT_OFFSET_MASK;
  }

  reftableEntryReserved(i: number): boolean {
    return (this.reftable[i]! & REFT_RESERVED_MASK) !== 0n;
  }

  /**
   * The refcount block for reftable index `ti` (qcow2_get_refcount's lookup), or undefined when
   * the entry is empty or beyond the table. Unaligned entries signal corruption and fail (EIO).
   */
  async refblock(ti: number): Promise<Uint8Array | undefined> {
    if (ti >= this.reftable.length) return undefined;
    switch (this.#rtState[ti]) {
      case RT_NONE:
        return undefined;
      case RT_OK:
        try {
          return await this.device.refcounts.cache.get(this.#rtOffset[ti]!);
        } catch (err) {
          // A read, or the write-back of another dirty block to make room, failed.
          throw new CheckAbort(errnoOf(err));
        }
      case RT_UNALIGNED:
        await this.signalCorruption(
          true,
          `Refblock offset ${altHex(this.reftableEntryOffset(ti))} unaligned (reftable index: ${altHex(ti)})`,
        );
        throw new CheckAbort('EIO');
      default: {
        const off = this.reftableEntryOffset(ti);
        if (asInt64(off) < 0n || off > BDRV_MAX_LENGTH - BigInt(this.clusterSize))
          throw new CheckAbort('EIO');
        return this.#zeroBlock;
      }
    }
  }

  /** qcow2_get_refcount(). */
  async getRefcount(clusterIndex: number): Promise<number> {
    const per = this.layout.refblockEntries;
    const block = await this.refblock(Math.floor(clusterIndex / per));
    if (!block) return 0;
    return readRefcountEntry(block, clusterIndex % per, this.layout.refcountOrder);
  }

  /** The exact refcount (for messages, where 64-bit refcounts may exceed 2^53). */
  async getRefcountExact(clusterIndex: number): Promise<bigint> {
    const per = this.layout.refblockEntries;
    const block = await this.refblock(Math.floor(clusterIndex / per));
    if (!block) return 0n;
    const index = clusterIndex % per;
    if (this.layout.refcountOrder < 6) {
      return BigInt(readRefcountEntry(block, index, this.layout.refcountOrder));
    }
    return (BigInt(readU32BE(block, 8 * index)) << 32n) | BigInt(readU32BE(block, 8 * index + 4));
  }

  // -------------------------------------------------------------------------------------------
  // Active L1 (shared with the device: s->l1_table)

  get l1Size(): number {
    return this.device.l1Size;
  }

  get l1TableOffset(): number {
    return this.device.header.l1TableOffset;
  }

  l1Hi(i: number): number {
    return this.device.l1Raw()[2 * i]!;
  }

  l1Lo(i: number): number {
    return this.device.l1Raw()[2 * i + 1]!;
  }

  // -------------------------------------------------------------------------------------------
  // I/O on the image file (bs->file)

  /** bdrv_pread(bs->file): zeros beyond EOF, EIO beyond BDRV_MAX_LENGTH. */
  async readAt(offset: number | bigint, length: number): Promise<Uint8Array> {
    const buf = new Uint8Array(length);
    await this.readInto(buf, offset);
    return buf;
  }

  /** The request checks of bdrv_pread() (bdrv_check_qiov_request): EIO when they fail. */
  assertReadable(offset: number | bigint, length: number): void {
    if (typeof offset === 'number' && offset + length <= Number.MAX_SAFE_INTEGER) return;
    const off = BigInt(offset);
    if (asInt64(off) < 0n || off > BDRV_MAX_LENGTH - BigInt(length)) throw new CheckAbort('EIO');
  }

  async readInto(buf: Uint8Array, offset: number | bigint): Promise<void> {
    if (typeof offset === 'bigint' || offset + buf.length > Number.MAX_SAFE_INTEGER) {
      this.assertReadable(offset, buf.length);
      buf.fill(0); // far beyond any real file end
      return;
    }
    try {
      await this.storage.read(buf, offset);
    } catch (err) {
      throw new CheckAbort(errnoOf(err));
    }
  }

  /** bdrv_pwrite (and bdrv_pwrite_sync with `sync`). */
  async writeAt(offset: number, data: Uint8Array, sync = false): Promise<void> {
    try {
      await this.storage.write(data, offset);
      if (sync) await this.storage.flush();
    } catch (err) {
      throw new CheckAbort(errnoOf(err));
    }
    this.fileLength = Math.max(this.fileLength, roundUp512(offset + data.length));
  }

  /**
   * bdrv_pdiscard(bs->file): QEMU opens the file node with discard=unmap, so clusters whose
   * refcount drops to 0 are punched out of the file. Failures are ignored, as in QEMU.
   */
  async discard(offset: number, length: number): Promise<void> {
    try {
      await this.storage.discard(offset, length);
    } catch {
      /* "Discard is optional, ignore the return value" */
    }
  }

  /**
   * bdrv_truncate(bs->file, length, PREALLOC_MODE_OFF). Failures throw a CheckAbort whose
   * message is what error_report_err() prints, or undefined when QEMU prints nothing.
   */
  async truncate(length: bigint): Promise<void> {
    if (length > BDRV_MAX_LENGTH) {
      throw new CheckAbort('EIO', `offset(${asInt64(length)}) exceeds maximum(${BDRV_MAX_LENGTH})`);
    }
    if (length > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new CheckAbort('EFBIG', 'Could not resize file: File too large');
    }
    try {
      await this.storage.truncate(Number(length));
    } catch (err) {
      const errno = errnoOf(err);
      throw new CheckAbort(errno, `Could not resize file: ${new CheckAbort(errno).message}`);
    }
    await this.refreshFileLength();
  }

  // -------------------------------------------------------------------------------------------
  // Corruption signaling and overlap checks

  /** qcow2_signal_corruption(). */
  async signalCorruption(fatal: boolean, message: string): Promise<void> {
    fatal = fatal && this.writable;
    const h = this.device.header;
    const corruptBit = (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n;
    if (this.#state.signaledCorruption && (!fatal || corruptBit)) return;
    this.emit(
      fatal
        ? `qcow2: Marking image as corrupt: ${message}; further corruption events will be suppressed`
        : `qcow2: Image is corrupt: ${message}; further non-fatal corruption events will be suppressed`,
    );
    if (fatal) {
      // qcow2_mark_corrupt() rewrites the header; then the node is unusable (bs->drv = NULL).
      h.incompatibleFeatures |= INCOMPAT_CORRUPT;
      try {
        await this.device.rewriteHeader();
      } catch {
        /* QEMU ignores the result too */
      }
      this.#state.unusable = true;
    }
    this.#state.signaledCorruption = true;
  }

  /** qcow2_check_metadata_overlap() with the default "cached" template; the section or 0. */
  async metadataOverlap(ign: number, offset: number, size: number): Promise<number> {
    const chk = OL_CACHED & ~ign;
    if (size === 0) return 0;
    const cs = this.clusterSize;
    if (chk & OL_MAIN_HEADER && offset < cs) return OL_MAIN_HEADER;
    const start = Math.floor(offset / cs) * cs;
    const len = Math.ceil(((offset % cs) + size) / cs) * cs;
    const hit = (ofs: number | bigint, sz: number | bigint): boolean =>
      rangesOverlap(start, len, ofs, sz);

    if (chk & OL_ACTIVE_L1 && this.l1Size && hit(this.l1TableOffset, this.l1Size * 8)) {
      return OL_ACTIVE_L1;
    }
    if (chk & OL_REFCOUNT_TABLE && this.reftable.length) {
      if (hit(this.reftableOffset, this.reftable.length * 8)) return OL_REFCOUNT_TABLE;
    }
    if (chk & OL_SNAPSHOT_TABLE && this.snapshotsSize) {
      if (hit(this.snapshotsOffset, this.snapshotsSize)) return OL_SNAPSHOT_TABLE;
    }
    if (chk & OL_INACTIVE_L1) {
      for (const sn of this.snapshots.slice(0, this.nbSnapshots)) {
        if (sn.l1Size && hit(sn.l1TableOffset, sn.l1Size * 8)) return OL_INACTIVE_L1;
      }
    }
    if (chk & OL_ACTIVE_L2) {
      const l1 = this.device.l1Raw();
      for (let i = 0; i < this.l1Size; i++) {
        const hi = l1[2 * i]! & 0x00ff_ffff;
        const lo = (l1[2 * i + 1]! & 0xffff_fe00) >>> 0;
        if ((hi | lo) === 0) continue;
        if (hit(hi * 0x1_0000_0000 + lo, cs)) return OL_ACTIVE_L2;
      }
    }
    if (chk & OL_REFCOUNT_BLOCK) {
      for (let i = 0; i < this.reftable.length; i++) {
        const off = this.reftableEntryOffset(i);
        if (off !== 0n && hit(off, cs)) return OL_REFCOUNT_BLOCK;
      }
    }
    if (chk & OL_BITMAP_DIRECTORY) {
      const h = this.device.header;
      if ((h.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n && h.bitmaps) {
        if (hit(h.bitmaps.directoryOffset, h.bitmaps.directorySize)) return OL_BITMAP_DIRECTORY;
      }
    }
    return 0;
  }

  /** qcow2_pre_write_overlap_check(): signal corruption and fail with EIO on an overlap. */
  async preWriteOverlapCheck(ign: number, offset: number, size: number): Promise<void> {
    const ol = await this.metadataOverlap(ign, offset, size);
    if (ol === 0) return;
    await this.signalCorruption(
      true,
      `Preventing invalid write on metadata (overlaps with ${OL_NAMES[ol]!})`,
    );
    throw new CheckAbort('EIO');
  }
}

/** ranges_overlap() on unsigned 64-bit values. */
export function rangesOverlap(
  aOff: number,
  aLen: number,
  bOff: number | bigint,
  bLen: number | bigint,
): boolean {
  if (typeof bOff === 'number' && typeof bLen === 'number') {
    return aOff < bOff + bLen && bOff < aOff + aLen;
  }
  const a = BigInt(aOff);
  const b = BigInt(bOff);
  return a < b + BigInt(bLen) && b < a + BigInt(aLen);
}
