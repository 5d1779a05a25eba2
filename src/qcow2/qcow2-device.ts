// The qcow2 BlockDevice: guest reads and writes through L1/L2 tables, allocation with correct
// refcounts and COPIED flags, copy-on-write from the backing file (per subcluster with extended
// L2), zero clusters, discard, compressed reads, block status, and ordered metadata flushes.
// Algorithms follow QEMU 7.2's block/qcow2*.c so images stay interchangeable with qemu-img.
//
// Concurrency: reads share a lock; anything that changes metadata takes it exclusively.
// Crash safety (process killed at any point => `qemu-img check` finds leaks at worst):
//   data clusters are written before the L2 entries that point at them; refcount increments
//   reach the disk before those L2 entries (L2 cache beforeWriteback); new L2 tables before the
//   L1 entries pointing at them; refcount decrements only after the L2/L1 updates that removed
//   the references (Refcounts.free / applyPendingFrees).

import type {
  BlockCapabilities,
  BlockDevice,
  BlockExtent,
  BlockStatusOptions,
  DataSink,
  FileRange,
  PlannedWriteTarget,
  WriteOptions,
  WriteZeroesOptions,
} from '../block/device.js';
import type { Storage } from '../block/storage.js';
import { assertRange } from '../block/range.js';
import { composeChainStatus, type LayerExtent } from '../block/chain-status.js';
import {
  CorruptImageError,
  EnvironmentError,
  InvalidArgumentError,
  NotSupportedError,
  printfHexAlt,
  RwLock,
  writeU32BE,
} from '../core/index.js';
import {
  AUTOCLEAR_BITMAPS,
  COMPAT_LAZY_REFCOUNTS,
  MAX_L1_SIZE_BYTES,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  L2_BITMAP_ALL_ZEROES,
} from './constants.js';
import { compressCluster, decompressCluster } from './compression.js';
import { encodeHeader, hasFeature, type Qcow2Header } from './header.js';
import {
  bitRange,
  clusterType,
  COPIED_HI,
  compressedLocation,
  EMPTY_ENTRY,
  entryOffset,
  isCopied,
  makeCompressedEntry,
  makeEntry,
  readL2Entry,
  subclusterType,
  writeL2Entry,
  type ClusterType,
  type L2Entry,
} from './l2-entry.js';
import type { Layout } from './layout.js';
import type { Refcounts } from './refcount.js';
import type { Qcow2Snapshot } from './snapshot-table.js';
import {
  applySnapshot,
  createSnapshot,
  deleteSnapshot,
  type SnapshotCreateInfo,
} from './snapshots.js';
import { truncateQcow2, type Qcow2TruncateOptions } from './truncate.js';
import type { TableCache } from './table-cache.js';
import { nativeFileOps } from '../block/native.js';
import { truncateHostFile, type PreallocMode } from '../block/preallocate.js';

/** How one run of guest bytes is stored in this layer. */
type Mapping =
  | { kind: 'data'; length: number; host: number }
  | { kind: 'zero'; length: number; host?: number }
  | { kind: 'unallocated'; length: number; host?: number }
  | { kind: 'compressed'; length: number; entry: L2Entry };

/**
 * Watches what changes guest-visible content, for persistent dirty bitmaps
 * (src/qcow2/bitmaps/persistent-bitmaps.ts): QEMU marks bitmaps in bdrv_co_write_req_finish()
 * and stores them when the image is closed (qcow2_inactivate). Every hook runs with the metadata
 * lock held exclusively; it may write metadata (use flushMetadataLocked, never flush/close).
 */
export interface GuestWriteObserver {
  /**
   * A write, zero write or discard of [offset, offset + length) is about to change the image.
   * Runs before anything of it reaches the disk, so an observer can first mark its on-disk
   * state as "in use" (crash safety: a killed writer leaves bitmaps marked inconsistent).
   */
  beforeGuestWrite(offset: number, length: number): Promise<void>;
  /** The virtual size is about to change; may refuse (qcow2_truncate_bitmaps_check). */
  beforeResize(newSize: number): Promise<void>;
  /** The virtual size changed (bdrv_dirty_bitmap_truncate). */
  afterResize(newSize: number): void;
  /** close() is about to write back metadata: persist what the observer keeps in memory. */
  beforeClose(): Promise<void>;
}

/** Data for one cluster (or subcluster range) of a write, at its host and guest offset. */
interface DataPiece {
  hostOffset: number;
  parts: Uint8Array[];
  guestOffset: number;
  /** Whole clusters only: parts is one view of the write's data, from this index on. */
  wholeFrom?: number;
}

export interface Qcow2DeviceInit {
  filename: string;
  storage: Storage;
  dataStorage: Storage;
  header: Qcow2Header;
  layout: Layout;
  l1: Uint32Array;
  refcounts: Refcounts;
  l2Cache: TableCache;
  backing: BlockDevice | undefined;
  readOnly: boolean;
  snapshots: Qcow2Snapshot[];
  /** Data clusters that are file holes count as zero (preallocation=metadata images). */
  metadataPreallocation: boolean;
  /**
   * Corruption the metadata-preallocation walk found in the refcount structure. QEMU walks
   * lazily, at the first block-status call, and on a writable image that corruption is fatal:
   * the image is marked corrupt and every later request fails with ENOMEDIUM.
   */
  refcountCorruption?: string | undefined;
  /** Extra devices/storages to close with this one (data file). */
  ownsDataStorage: boolean;
}

export class Qcow2Device implements BlockDevice {
  readonly format = 'qcow2' as const;
  readonly filename: string;
  readonly storage: Storage;
  readonly dataStorage: Storage;
  readonly header: Qcow2Header;
  readonly layout: Layout;
  readonly capabilities: BlockCapabilities;
  readonly snapshots: Qcow2Snapshot[];
  backing: BlockDevice | undefined;
  readonly #refcounts: Refcounts;
  readonly #l2: TableCache;
  /** Active L1 table, two u32 halves per entry (bits 32-63 first). */
  #l1: Uint32Array;
  readonly #lock = new RwLock();
  readonly #readOnly: boolean;
  readonly #ownsData: boolean;
  readonly #metadataPreallocation: boolean;
  /** See Qcow2Init.refcountCorruption: signalled on the first block-status call. */
  #pendingCorruption: string | undefined;
  /** A fatal corruption event happened (QEMU's bs->drv = NULL): every request fails. */
  #fatalCorruption: string | undefined;
  #dirtyMarked = false;
  #closed = false;
  #observer: GuestWriteObserver | undefined;
  /** One decompressed cluster, keyed by its L2 entry, for sequential small reads. */
  #decompressed: { hi: number; lo: number; data: Uint8Array } | undefined;
  /** Host offsets of the active L2 tables, for overlap checks; rebuilt after L1 changes. */
  #activeL2: Set<number> | undefined;
  /** While planWrite() runs: where #writeData() hands the data writes. */
  #dataSink: DataSink | undefined;

  constructor(init: Qcow2DeviceInit) {
    this.filename = init.filename;
    this.storage = init.storage;
    this.dataStorage = init.dataStorage;
    this.header = init.header;
    this.layout = init.layout;
    this.#l1 = init.l1;
    this.#refcounts = init.refcounts;
    this.#l2 = init.l2Cache;
    this.backing = init.backing;
    this.#readOnly = init.readOnly;
    this.snapshots = init.snapshots;
    this.#ownsData = init.ownsDataStorage;
    this.#metadataPreallocation = init.metadataPreallocation;
    this.#pendingCorruption = init.readOnly ? undefined : init.refcountCorruption;
    this.capabilities = {
      readOnly: init.readOnly,
      fastZero: this.header.version >= 3 || !init.backing,
      discard: true,
      zeroInit: !init.backing && !hasFeature.dataFile(init.header),
      multiConn: false,
      allocationGranularity: this.layout.subclusterSize,
      requestAlignment: 1,
      hasAllocationStatus: true,
    };
    this.#l2.beforeWriteback = () => this.#refcounts.cache.flush();
    // A freed L2 table must never be written back over whatever reuses its cluster.
    this.#refcounts.onClusterZero = (off) => {
      this.#l2.discard(off);
      this.#activeL2 = undefined;
    };
    this.#refcounts.flushL2 = async () => {
      await this.#refcounts.cache.flush();
      await this.#l2.flush();
    };
    if (!hasFeature.dataFile(init.header)) {
      const native = nativeFileOps();
      if (native && !init.readOnly) {
        // QEMU passes discards of freed clusters down to the file (pass-discard-request).
        this.#refcounts.onClusterFreed = (off, len) => this.storage.discard(off, len);
      }
    }
  }

  get size(): number {
    return this.header.size;
  }

  get l1Size(): number {
    return this.#l1.length / 2;
  }

  get readOnly(): boolean {
    return this.#readOnly;
  }

  /** Raw active L1 entry (for check and info). */
  l1Entry(index: number): { offset: number; copied: boolean; hi: number; lo: number } {
    const hi = this.#l1[2 * index]!;
    const lo = this.#l1[2 * index + 1]!;
    return { offset: entryOffset({ hi, lo }), copied: (hi & COPIED_HI) !== 0, hi, lo };
  }

  get refcounts(): Refcounts {
    return this.#refcounts;
  }

  get l2Cache(): TableCache {
    return this.#l2;
  }

  // ---------------------------------------------------------------------------------------
  // Mapping (qcow2_get_host_offset)

  #corrupt(message: string): never {
    throw new CorruptImageError(`qcow2: Image is corrupt: ${message}`, {
      code: 'VMF_QCOW2_CORRUPT',
    });
  }

  /** The L2 table covering guest `offset`, or undefined if none is allocated. */
  async #l2TableFor(
    offset: number,
  ): Promise<{ table: Uint8Array; tableOffset: number } | undefined> {
    const l1Index = Math.floor(offset / this.layout.l2Coverage);
    if (l1Index >= this.l1Size) return undefined;
    const l2Offset = entryOffset({ hi: this.#l1[2 * l1Index]!, lo: this.#l1[2 * l1Index + 1]! });
    if (l2Offset === 0) return undefined;
    if (l2Offset % this.layout.clusterSize !== 0) {
      this.#corrupt(
        `L2 table offset 0x${l2Offset.toString(16)} unaligned (L1 index: ${printfHexAlt(l1Index)})`,
      );
    }
    return { table: await this.#l2.get(l2Offset), tableOffset: l2Offset };
  }

  /**
   * How guest bytes from `offset` (at most `maxLength`) are stored: one run of a single kind
   * with contiguous host offsets, never crossing an L2 table.
   */
  async #map(offset: number, maxLength: number): Promise<Mapping> {
    const { clusterSize, subclusterSize, l2Coverage, l2Entries } = this.layout;
    const tableEnd = (Math.floor(offset / l2Coverage) + 1) * l2Coverage;
    const limit = Math.min(offset + maxLength, tableEnd);
    const l2 = await this.#l2TableFor(offset);
    if (!l2) return { kind: 'unallocated', length: limit - offset };

    const hasDataFile = hasFeature.dataFile(this.header);
    let pos = offset;
    let first: Mapping | undefined;
    let expectHost = -1;
    while (pos < limit) {
      const index = Math.floor(pos / clusterSize) % l2Entries;
      const entry = readL2Entry(l2.table, index, this.layout);
      const type = clusterType(entry, this.layout, hasDataFile);
      const inCluster = pos % clusterSize;
      const sc = Math.floor(inCluster / subclusterSize);
      const stype = subclusterType(entry, type, this.layout, sc);
      const scEnd = Math.min(limit, pos - (inCluster % subclusterSize) + subclusterSize);
      const host = entryOffset(entry);
      if (stype === 'invalid') {
        this.#corrupt(
          `Invalid cluster entry found (L2 offset: 0x${l2.tableOffset.toString(16)}, L2 index: ${printfHexAlt(index)})`,
        );
      }
      if ((type === 'normal' || type === 'zero-alloc') && host % clusterSize !== 0) {
        this.#corrupt(
          `Cluster allocation offset 0x${host.toString(16)} unaligned (L2 offset: 0x${l2.tableOffset.toString(16)}, L2 index: ${printfHexAlt(index)})`,
        );
      }
      if (type === 'normal' && hasFeature.dataFileRaw(this.header) && host !== pos - inCluster) {
        this.#corrupt('External data file host cluster offset does not match guest cluster offset');
      }
      let m: Mapping;
      const hostHere = host + inCluster;
      switch (stype) {
        case 'normal':
          m = { kind: 'data', length: scEnd - pos, host: hostHere };
          break;
        case 'zero-plain':
          m = { kind: 'zero', length: scEnd - pos };
          break;
        case 'zero-alloc':
          m = { kind: 'zero', length: scEnd - pos, host: hostHere };
          break;
        case 'unallocated-alloc':
          m = { kind: 'unallocated', length: scEnd - pos, host: hostHere };
          break;
        case 'compressed':
          if (hasDataFile) {
            this.#corrupt(
              `Compressed cluster entry found in image with external data file (L2 offset: 0x${l2.tableOffset.toString(16)}, L2 index: 0x${index.toString(16)})`,
            );
          }
          m = {
            kind: 'compressed',
            length: Math.min(limit, pos - inCluster + clusterSize) - pos,
            entry,
          };
          break;
        default:
          m = { kind: 'unallocated', length: scEnd - pos };
      }
      if (!first) {
        first = m;
        if (m.kind === 'compressed') return m; // one cluster at a time
        expectHost = 'host' in m && m.host !== undefined ? m.host + m.length : -1;
      } else {
        const hostOk =
          !('host' in first) || first.host === undefined
            ? !('host' in m) || m.host === undefined
            : 'host' in m && m.host === expectHost;
        if (m.kind !== first.kind || !hostOk) break;
        first.length += m.length;
        if (expectHost >= 0) expectHost += m.length;
      }
      pos = scEnd;
    }
    return first!;
  }

  // ---------------------------------------------------------------------------------------
  // Reads

  async read(buf: Uint8Array, offset: number): Promise<void> {
    assertRange('read', offset, buf.length, this.size);
    this.#checkOpen();
    await this.#lock.shared(() => this.#read(buf, offset));
  }

  #checkOpen(): void {
    if (this.#closed) throw new InvalidArgumentError(`'${this.filename}' is closed`);
    if (this.#fatalCorruption !== undefined) {
      // What QEMU returns once a fatal corruption event removed the driver.
      throw new EnvironmentError('No medium found', {
        code: 'VMF_QCOW2_FATAL',
        errno: 'ENOMEDIUM',
        details: { corruption: this.#fatalCorruption },
      });
    }
  }

  #checkDataAccess(): void {
    if (this.header.cryptMethod !== 0) {
      throw new NotSupportedError(
        `'${this.filename}' is encrypted (${this.header.cryptMethod === 1 ? 'AES' : 'LUKS'}); vmforge cannot access encrypted qcow2 data`,
        { code: 'VMF_QCOW2_ENCRYPTED' },
      );
    }
  }

  async #read(buf: Uint8Array, offset: number): Promise<void> {
    this.#checkDataAccess();
    let pos = 0;
    while (pos < buf.length) {
      const m = await this.#map(offset + pos, buf.length - pos);
      const dst = buf.subarray(pos, pos + m.length);
      switch (m.kind) {
        case 'data':
          // planWrite()'s caller may not have written this yet (see there).
          if (this.#dataSink) throw new Error('internal error: a planned write copies file data');
          await this.dataStorage.read(dst, m.host);
          break;
        case 'zero':
          dst.fill(0);
          break;
        case 'unallocated':
          await this.#readBacking(dst, offset + pos);
          break;
        case 'compressed': {
          const cluster = await this.#decompress(m.entry);
          const inCluster = (offset + pos) % this.layout.clusterSize;
          dst.set(cluster.subarray(inCluster, inCluster + m.length));
          break;
        }
      }
      pos += m.length;
    }
  }

  async #readBacking(dst: Uint8Array, offset: number): Promise<void> {
    const b = this.backing;
    if (!b || offset >= b.size) {
      dst.fill(0);
      return;
    }
    const n = Math.min(dst.length, b.size - offset);
    await b.read(dst.subarray(0, n), offset);
    if (n < dst.length) dst.fill(0, n);
  }

  async #decompress(entry: L2Entry): Promise<Uint8Array> {
    const c = this.#decompressed;
    if (c && c.hi === entry.hi && c.lo === entry.lo) return c.data;
    const { offset, size } = compressedLocation(entry, this.layout);
    const raw = new Uint8Array(size);
    await this.dataStorage.read(raw, offset);
    const data = await decompressCluster(this.header.compressionType, raw, this.layout.clusterSize);
    this.#decompressed = { hi: entry.hi, lo: entry.lo, data };
    return data;
  }

  /**
   * BlockDevice.fileRange: the host range of a run of plain data clusters in this layer, for
   * read-only images only. On a writable image a cluster freed by a discard can be reused for
   * other guest data while a reply that referenced its pages is still unread in a socket.
   */
  async fileRange(offset: number, length: number): Promise<FileRange | undefined> {
    if (!this.dataStorage.readOnly || this.header.cryptMethod !== 0 || length <= 0) {
      return undefined;
    }
    if (offset < 0 || offset + length > this.size || this.#closed) return undefined;
    const fd = (this.dataStorage as { fd?: unknown }).fd;
    if (typeof fd !== 'number') return undefined;
    const m = await this.#lock.shared(() => this.#map(offset, length));
    return m.kind === 'data' && m.length >= length ? { fd, offset: m.host } : undefined;
  }

  // ---------------------------------------------------------------------------------------
  // Block status

  async blockStatus(
    offset: number,
    length: number,
    options: BlockStatusOptions = {},
  ): Promise<BlockExtent[]> {
    assertRange('block status', offset, length, this.size);
    this.#checkOpen();
    if (this.#pendingCorruption !== undefined) {
      // qcow2_co_block_status -> qcow2_detect_metadata_preallocation -> qcow2_signal_corruption
      // (fatal on a writable image): the corrupt bit goes to disk, this call still completes.
      this.#fatalCorruption = this.#pendingCorruption;
      this.#pendingCorruption = undefined;
      await this.#markCorrupt();
    }
    if (length === 0) return [];
    const max = options.maxExtents ?? Infinity;
    const layer = await this.#lock.shared(() => this.#layerStatus(offset, length, max));
    return composeChainStatus(layer, this.backing, options.maxExtents ?? Infinity);
  }

  /** This layer's own status (qcow2_co_block_status), up to the end of one L2 table. */
  /**
   * This layer's extents from `offset`, up to the end of its L2 table and at most `maxExtents`
   * of them (a caller walking extent by extent must not pay for the whole table each time).
   */
  async #layerStatus(
    offset: number,
    length: number,
    maxExtents = Infinity,
  ): Promise<LayerExtent[]> {
    const out: LayerExtent[] = [];
    const end = Math.min(
      offset + length,
      (Math.floor(offset / this.layout.l2Coverage) + 1) * this.layout.l2Coverage,
    );
    const file = this.dataStorage.filename;
    const encrypted = this.header.cryptMethod !== 0;
    let pos = offset;
    while (pos < end && out.length < maxExtents) {
      const m = await this.#map(pos, end - pos);
      const base = { offset: pos, length: m.length };
      const hostInfo = (host: number | undefined) =>
        host !== undefined && !encrypted ? { hostOffset: host, file } : {};
      switch (m.kind) {
        case 'data':
          if (this.#metadataPreallocation && this.dataStorage.extent) {
            // BDRV_BLOCK_RECURSE: data clusters that are holes in the file read as zero.
            let p = 0;
            while (p < m.length) {
              const ext = await this.dataStorage.extent(m.host + p, m.length - p);
              const run = ext ? ext.length : m.length - p;
              out.push({
                offset: pos + p,
                length: run,
                data: true,
                zero: ext?.hole ?? false,
                ...hostInfo(m.host + p),
              });
              p += run;
            }
          } else {
            out.push({ ...base, data: true, zero: false, ...hostInfo(m.host) });
          }
          break;
        case 'zero':
          out.push({ ...base, data: false, zero: true, ...hostInfo(m.host) });
          break;
        case 'unallocated':
          out.push({ ...base, data: false, zero: false, ...hostInfo(m.host) });
          break;
        case 'compressed':
          out.push({ ...base, data: true, zero: false, compressed: true });
          break;
      }
      pos += m.length;
    }
    return out;
  }

  // ---------------------------------------------------------------------------------------
  // Writes

  #checkWritable(): void {
    this.#checkOpen();
    if (this.#readOnly) {
      throw new EnvironmentError(`Cannot write to '${this.filename}': opened read-only`, {
        code: 'VMF_READ_ONLY',
        errno: 'EROFS',
      });
    }
    if ((this.header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n) {
      throw new CorruptImageError('qcow2: Image is corrupt; cannot be opened read/write', {
        code: 'VMF_QCOW2_CORRUPT',
      });
    }
    this.#checkDataAccess();
  }

  async write(buf: Uint8Array, offset: number, options: WriteOptions = {}): Promise<void> {
    if ((await this.#guestWrite(buf, offset, undefined)) && options.fua) await this.flush();
  }

  /**
   * What write(buf, offset) does, except that the data writes are handed to `sink` instead of
   * being made, in the order write() makes them: for a bulk writer that makes them itself
   * (convert's native copy loop into a qcow2 file). The metadata (L2 entries, refcounts) changes
   * as with write(), so the caller must have the data written before anything reads it back.
   * Parts that are views of `buf`'s buffer stand for those bytes and are never read, so `buf`
   * may be a placeholder of the right length; other parts are copy-on-write bytes. Only for an
   * image where a write never has to copy data of its file (one convert created, nothing
   * allocated yet): a planned write that would read data from the file fails.
   */
  async planWrite(buf: Uint8Array, offset: number, sink: DataSink): Promise<void> {
    await this.#guestWrite(buf, offset, sink);
  }

  /** write() and planWrite(): false for an empty write (nothing done). */
  async #guestWrite(buf: Uint8Array, offset: number, sink: DataSink | undefined): Promise<boolean> {
    assertRange('write', offset, buf.length, this.size);
    this.#checkWritable();
    if (buf.length === 0) return false;
    await this.#lock.exclusive(async () => {
      await this.#observer?.beforeGuestWrite(offset, buf.length);
      await this.#markDirty();
      this.#dataSink = sink;
      try {
        await this.#write(buf, offset);
      } finally {
        this.#dataSink = undefined;
      }
      await this.#maybeApplyFrees();
    });
    return true;
  }

  /**
   * BlockDevice.plannedWriteTarget: for an image in a file of its own (no data file, backing
   * file or encryption), opened read-write and not writethrough. Its caller must only plan
   * writes that copy nothing from the file (planWrite()): into an image convert just created.
   */
  plannedWriteTarget(): PlannedWriteTarget | undefined {
    if (this.#closed || this.#readOnly || this.backing || this.header.backingFile) return undefined;
    if (hasFeature.dataFile(this.header) || this.header.cryptMethod !== 0) return undefined;
    const writer = this.storage.directWriter?.();
    if (!writer) return undefined;
    return {
      fd: writer.fd,
      size: this.size,
      plan: (buf, offset, sink) => this.planWrite(buf, offset, sink),
      announce: writer.announce,
      settle: writer.settle,
    };
  }

  /** The data writes of #write(): made here, or handed to planWrite()'s sink. */
  async #writeData(parts: Uint8Array[], host: number): Promise<void> {
    const nonEmpty = parts.filter((p) => p.length > 0);
    if (nonEmpty.length === 0) return;
    this.#checkOverlap(
      host,
      nonEmpty.reduce((n, p) => n + p.length, 0),
    );
    if (this.#dataSink) this.#dataSink(nonEmpty, host);
    else await this.dataStorage.write(joinViews(nonEmpty), host);
  }

  /** Before the first change, with lazy refcounts: set the dirty bit (qcow2_mark_dirty). */
  async #markDirty(): Promise<void> {
    if (this.#dirtyMarked) return;
    if ((this.header.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) === 0n) {
      this.#dirtyMarked = true;
      return;
    }
    this.header.incompatibleFeatures |= INCOMPAT_DIRTY;
    await this.#writeIncompatibleFeatures();
    await this.storage.flush();
    this.#dirtyMarked = true;
  }

  async #writeIncompatibleFeatures(): Promise<void> {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, this.header.incompatibleFeatures);
    await this.storage.write(b, 72);
  }

  /** Guest content of [offset, offset+length) as it reads now (COW source). */
  async #readGuest(offset: number, length: number): Promise<Uint8Array> {
    const buf = new Uint8Array(length);
    // COW regions may extend past the virtual size up to the end of the last cluster: QEMU
    // writes zeros there (they read as zeros), so the file covers whole clusters.
    const inside = Math.max(0, Math.min(length, this.size - offset));
    if (inside > 0) await this.#read(buf.subarray(0, inside), offset);
    return buf;
  }

  async #write(buf: Uint8Array, offset: number): Promise<void> {
    const { clusterSize, l2Coverage } = this.layout;
    let pos = 0;
    let hostHint: number | undefined; // host offset right after the previous piece
    while (pos < buf.length) {
      const guest = offset + pos;
      const tableEnd = (Math.floor(guest / l2Coverage) + 1) * l2Coverage;
      const chunkEnd = Math.min(offset + buf.length, tableEnd);
      const { table, tableOffset } = await this.#getClusterTable(guest);
      // Classify the first cluster, then take the longest run of clusters with the same need.
      const firstIndex = Math.floor(guest / clusterSize) % this.layout.l2Entries;
      const reuse = this.#canReuse(readL2Entry(table, firstIndex, this.layout));
      let runEnd = Math.min(chunkEnd, (Math.floor(guest / clusterSize) + 1) * clusterSize);
      let expectHost = reuse
        ? entryOffset(readL2Entry(table, firstIndex, this.layout)) + clusterSize
        : 0;
      while (runEnd < chunkEnd) {
        const idx = Math.floor(runEnd / clusterSize) % this.layout.l2Entries;
        const e = readL2Entry(table, idx, this.layout);
        if (this.#canReuse(e) !== reuse) break;
        if (reuse) {
          if (entryOffset(e) !== expectHost) break;
          expectHost += clusterSize;
        }
        runEnd = Math.min(chunkEnd, runEnd + clusterSize);
      }
      const data = buf.subarray(pos, pos + (runEnd - guest));
      let written = data.length;
      if (reuse) {
        hostHint = await this.#writeInPlace(table, tableOffset, data, guest);
      } else {
        ({ hostEnd: hostHint, written } = await this.#writeAllocating(
          table,
          tableOffset,
          data,
          guest,
          hostHint,
        ));
      }
      pos += written;
    }
  }

  /** A cluster whose host cluster can be written in place (handle_copied). */
  #canReuse(e: L2Entry): boolean {
    const type = clusterType(e, this.layout, hasFeature.dataFile(this.header));
    if (hasFeature.dataFile(this.header)) return type === 'normal' || type === 'zero-alloc';
    return (type === 'normal' || type === 'zero-alloc') && isCopied(e);
  }

  /**
   * Write into clusters that are already ours (refcount 1). Subclusters that were not
   * allocated or read as zero get their partial edges copied first and their bitmap updated.
   * Returns the host offset after the written range.
   */
  async #writeInPlace(
    table: Uint8Array,
    tableOffset: number,
    data: Uint8Array,
    guest: number,
  ): Promise<number> {
    const { clusterSize, l2Entries } = this.layout;
    const g = this.layout.subclusterSize;
    const end = guest + data.length;
    const firstIdx = Math.floor(guest / clusterSize) % l2Entries;
    const firstEntry = readL2Entry(table, firstIdx, this.layout);
    const host = entryOffset(firstEntry) + (guest % clusterSize);

    // Which clusters need metadata changes (zero flag or unallocated/zero subclusters)?
    const hasDataFile = hasFeature.dataFile(this.header);
    let needsMeta = false;
    for (let c = Math.floor(guest / clusterSize); c * clusterSize < end; c++) {
      const e = readL2Entry(table, c % l2Entries, this.layout);
      const type = clusterType(e, this.layout, hasDataFile);
      if (type === 'zero-alloc') needsMeta = true;
      if (this.layout.extendedL2) {
        const from = Math.floor((Math.max(guest, c * clusterSize) % clusterSize) / g);
        const to = Math.ceil((Math.min(end, (c + 1) * clusterSize) - c * clusterSize) / g);
        if (
          (e.allocBits & bitRange(from, to)) >>> 0 !== bitRange(from, to) ||
          (e.zeroBits & bitRange(from, to)) !== 0
        ) {
          needsMeta = true;
        }
      }
    }
    if (!needsMeta) {
      await this.#writeData([data], host);
      this.#invalidateDecompressed();
      return host + data.length;
    }

    // COW granularity: the subcluster with extended L2, else the whole cluster. An edge
    // subcluster that is allocated already holds its bytes in place: nothing to copy
    // (calculate_l2_meta: QCOW2_SUBCLUSTER_NORMAL needs no COW).
    const gran = this.layout.extendedL2 ? g : clusterSize;
    let start = Math.floor(guest / gran) * gran;
    let stop = Math.ceil(end / gran) * gran;
    if (this.layout.extendedL2) {
      const allocated = (at: number) => {
        const e = readL2Entry(table, Math.floor(at / clusterSize) % l2Entries, this.layout);
        return ((e.allocBits >>> Math.floor((at % clusterSize) / g)) & 1) === 1;
      };
      if (allocated(guest)) start = guest;
      if (allocated(end - 1)) stop = end;
    }
    const head = await this.#cowRegion(table, start, guest);
    const tail = await this.#cowRegion(table, end, stop);
    const hostStart = host - (guest - start);
    await this.#writeData([head, data, tail], hostStart);
    for (let c = Math.floor(start / clusterSize); c * clusterSize < stop; c++) {
      const idx = c % l2Entries;
      const e = readL2Entry(table, idx, this.layout);
      const from = Math.floor((Math.max(start, c * clusterSize) - c * clusterSize) / g);
      const to = Math.ceil((Math.min(stop, (c + 1) * clusterSize) - c * clusterSize) / g);
      const bits = this.layout.extendedL2 ? bitRange(from, to) : 0;
      writeL2Entry(table, idx, this.layout, {
        hi: e.hi,
        lo: this.layout.extendedL2 ? e.lo : (e.lo & ~1) >>> 0,
        zeroBits: (e.zeroBits & ~bits) >>> 0,
        allocBits: (e.allocBits | bits) >>> 0,
      });
    }
    this.#l2.markDirty(tableOffset);
    this.#invalidateDecompressed();
    return hostStart + (stop - start);
  }

  /**
   * Guest bytes of [from, to) within one cluster that a write must preserve: read only where the
   * current content is not already what a fresh allocation gives (zeros).
   */
  async #cowRegion(_table: Uint8Array, from: number, to: number): Promise<Uint8Array> {
    if (to <= from) return new Uint8Array(0);
    return this.#readGuest(from, to - from);
  }

  /**
   * Write into clusters that need new host clusters (unallocated, zero, compressed, or shared
   * after a snapshot): allocate, copy what the write does not cover, write, then link the L2
   * entries and release the old clusters. Returns the host offset after the written range.
   */
  async #writeAllocating(
    table: Uint8Array,
    tableOffset: number,
    data: Uint8Array,
    guest: number,
    hostHint: number | undefined,
  ): Promise<{ hostEnd: number; written: number }> {
    const { clusterSize, l2Entries } = this.layout;
    const g = this.layout.subclusterSize;
    const ext = this.layout.extendedL2;
    const end = guest + data.length;
    const firstCluster = Math.floor(guest / clusterSize);
    const lastCluster = Math.floor((end - 1) / clusterSize);
    let n = lastCluster - firstCluster + 1;

    // Allocate: continue contiguously after the previous piece if possible (qcow2_alloc_clusters_at).
    let hostBase: number;
    if (hasFeature.dataFile(this.header)) {
      hostBase = firstCluster * clusterSize; // external data file: host offset == guest offset
    } else {
      let got = 0;
      hostBase = 0;
      if (hostHint !== undefined && hostHint % clusterSize === 0) {
        got = await this.#refcounts.allocClustersAt(hostHint, n);
        if (got > 0) hostBase = hostHint;
      }
      if (got === 0) {
        hostBase = await this.#refcounts.allocClusters(n);
        got = n;
      }
      if (got < n) {
        // Only part of the run could be contiguous: write that part now, the rest next round.
        n = got;
      }
    }
    const runEnd = Math.min(end, (firstCluster + n) * clusterSize);
    const old: L2Entry[] = [];
    for (let i = 0; i < n; i++)
      old.push(readL2Entry(table, (firstCluster + i) % l2Entries, this.layout));

    // Build what goes to disk, cluster by cluster.
    const pieces: DataPiece[] = [];
    const newEntries: L2Entry[] = [];
    const hasDataFile = hasFeature.dataFile(this.header);
    for (let i = 0; i < n; i++) {
      const c = firstCluster + i;
      const cStart = c * clusterSize;
      const cEnd = cStart + clusterSize;
      const wFrom = Math.max(guest, cStart);
      const wTo = Math.min(runEnd, cEnd);
      const hostCluster = hostBase + i * clusterSize;
      const e = old[i]!;
      const type = clusterType(e, this.layout, hasDataFile);
      const payload = data.subarray(wFrom - guest, wTo - guest);
      if (ext && (type === 'unallocated' || type === 'normal')) {
        // Only the touched subclusters become allocated; partial edges are copied.
        const sFrom = Math.floor((wFrom - cStart) / g);
        const sTo = Math.ceil((wTo - cStart) / g);
        const regionStart = cStart + sFrom * g;
        const regionEnd = cStart + sTo * g;
        let parts: Uint8Array[];
        let allocBits = bitRange(sFrom, sTo);
        let writeStart = regionStart;
        if (type === 'normal') {
          // A shared cluster: copy every allocated subcluster too. (Never met by planWrite():
          // its payload parts are placeholders, not to be copied.)
          if (this.#dataSink)
            throw new Error('internal error: planned write into a shared cluster');
          const whole = await this.#readGuest(cStart, cEnd - cStart);
          whole.set(payload, wFrom - cStart);
          parts = [whole];
          writeStart = cStart;
          allocBits = (allocBits | e.allocBits) >>> 0;
        } else {
          parts = [
            await this.#readGuest(regionStart, wFrom - regionStart),
            payload,
            await this.#readGuest(wTo, regionEnd - wTo),
          ];
        }
        pieces.push({
          hostOffset: hostCluster + (writeStart - cStart),
          parts,
          guestOffset: writeStart,
        });
        newEntries.push(
          makeEntry(
            hostCluster,
            { copied: true },
            { allocBits, zeroBits: (e.zeroBits & ~allocBits) >>> 0 },
          ),
        );
      } else {
        // Whole clusters (the usual case: convert's chunks, aligned writes) need no COW reads;
        // a run of them is one piece over the caller's buffer, not one per cluster.
        const whole = wFrom === cStart && wTo === cEnd;
        const last = pieces[pieces.length - 1];
        if (whole && last?.wholeFrom !== undefined) {
          last.parts[0] = data.subarray(last.wholeFrom, wTo - guest);
        } else {
          const parts = whole
            ? [payload]
            : [
                await this.#readGuest(cStart, wFrom - cStart),
                payload,
                await this.#readGuest(wTo, cEnd - wTo),
              ];
          pieces.push({
            hostOffset: hostCluster,
            parts,
            guestOffset: cStart,
            ...(whole ? { wholeFrom: wFrom - guest } : {}),
          });
        }
        newEntries.push(
          makeEntry(hostCluster, { copied: true }, ext ? { allocBits: bitRange(0, 32) } : {}),
        );
      }
    }

    // Data first (one write when the pieces are contiguous).
    for (const group of contiguousGroups(pieces))
      await this.#writeData(group.parts, group.hostOffset);
    // Then the L2 entries, then release what they pointed at before.
    for (let i = 0; i < n; i++) {
      writeL2Entry(table, (firstCluster + i) % l2Entries, this.layout, newEntries[i]!);
    }
    this.#l2.markDirty(tableOffset);
    for (const e of old) this.#freeEntry(e, false);
    this.#invalidateDecompressed();
    return { hostEnd: hostBase + n * clusterSize, written: runEnd - guest };
  }

  #invalidateDecompressed(): void {
    this.#decompressed = undefined;
  }

  /** Release the host storage an old L2 entry referenced (qcow2_free_any_cluster). */
  #freeEntry(e: L2Entry, passDiscard: boolean): void {
    if (hasFeature.dataFile(this.header)) return;
    const type = clusterType(e, this.layout, false);
    if (type === 'compressed') {
      const { offset, size } = compressedLocation(e, this.layout);
      this.#refcounts.free(offset, size, passDiscard);
    } else if (type === 'normal' || type === 'zero-alloc') {
      this.#refcounts.free(entryOffset(e), this.layout.clusterSize, passDiscard);
    }
  }

  /**
   * The L2 table for guest `offset`, ready for modification: allocated if missing, copied if
   * shared with a snapshot (get_cluster_table / l2_allocate).
   */
  async #getClusterTable(offset: number): Promise<{ table: Uint8Array; tableOffset: number }> {
    const l1Index = Math.floor(offset / this.layout.l2Coverage);
    if (l1Index >= this.l1Size) {
      throw new CorruptImageError(`L1 table too small for offset ${offset}`);
    }
    const { offset: l2Offset, copied } = this.l1Entry(l1Index);
    if (l2Offset % this.layout.clusterSize !== 0) {
      this.#corrupt(
        `L2 table offset 0x${l2Offset.toString(16)} unaligned (L1 index: ${printfHexAlt(l1Index)})`,
      );
    }
    if (l2Offset !== 0 && copied)
      return { table: await this.#l2.get(l2Offset), tableOffset: l2Offset };

    // l2_allocate: new table (a copy of the old one, if any), refcounts first, then the table,
    // then the L1 entry.
    const newOffset = await this.#refcounts.allocClusters(1);
    if (newOffset === 0) this.#corrupt('Preventing invalid allocation of L2 table at offset 0');
    await this.#refcounts.cache.flush();
    let content: Uint8Array | undefined;
    if (l2Offset !== 0) content = (await this.#l2.get(l2Offset)).slice();
    const table = await this.#l2.getEmpty(newOffset);
    if (content) table.set(content);
    await this.#l2.flush();
    this.#l1[2 * l1Index] = (Math.floor(newOffset / 0x1_0000_0000) | COPIED_HI) >>> 0;
    this.#l1[2 * l1Index + 1] = newOffset % 0x1_0000_0000;
    this.#activeL2 = undefined;
    await this.#writeL1Entry(l1Index);
    if (l2Offset !== 0) this.#refcounts.free(l2Offset, this.layout.clusterSize, false);
    return { table, tableOffset: newOffset };
  }

  /** Write the 512-byte-aligned block of L1 entries containing `index` (qcow2_write_l1_entry). */
  async #writeL1Entry(index: number): Promise<void> {
    const perBlock = 64;
    const first = Math.floor(index / perBlock) * perBlock;
    const count = Math.min(perBlock, this.l1Size - first);
    const buf = new Uint8Array(count * 8);
    for (let i = 0; i < count; i++) {
      writeU32BE(buf, i * 8, this.#l1[2 * (first + i)]!);
      writeU32BE(buf, i * 8 + 4, this.#l1[2 * (first + i) + 1]!);
    }
    const at = this.header.l1TableOffset + first * 8;
    this.#checkOverlapExcept(at, buf.length, 'l1');
    await this.storage.write(buf, at);
  }

  // ---------------------------------------------------------------------------------------
  // Growing (qcow2_co_truncate, grow path) and preallocation

  /** qcow2_grow_l1_table(): a new, larger L1 table in fresh clusters, then switch the header. */
  async #growL1(minSize: number, exact: boolean): Promise<void> {
    if (minSize <= this.l1Size) return;
    let newSize = minSize;
    if (!exact) {
      newSize = Math.max(1, this.l1Size);
      while (minSize > newSize) newSize = Math.ceil((newSize * 3) / 2);
    }
    if (newSize > MAX_L1_SIZE_BYTES / 8) {
      throw new InvalidArgumentError('Failed to grow the L1 table: File too large', {
        code: 'VMF_EFBIG',
      });
    }
    const bytes = newSize * 8;
    const newOffset = await this.#refcounts.allocClusters(
      Math.ceil(bytes / this.layout.clusterSize),
    );
    await this.#refcounts.cache.flush();
    this.#checkOverlap(newOffset, bytes);
    const l1 = new Uint32Array(newSize * 2);
    l1.set(this.#l1);
    const buf = new Uint8Array(bytes);
    for (let i = 0; i < l1.length; i++) writeU32BE(buf, i * 4, l1[i]!);
    await this.storage.write(buf, newOffset);
    const hdr = new Uint8Array(12);
    const view = new DataView(hdr.buffer);
    view.setUint32(0, newSize);
    view.setBigUint64(4, BigInt(newOffset));
    await this.storage.write(hdr, 36);
    const oldOffset = this.header.l1TableOffset;
    const oldBytes = this.l1Size * 8;
    this.header.l1TableOffset = newOffset;
    this.header.l1Size = newSize;
    this.setL1(l1);
    if (oldBytes > 0) await this.#refcounts.update(oldOffset, oldBytes, -1);
  }

  /**
   * Grow the virtual size (qcow2_co_truncate). `prealloc` allocates metadata only ('metadata'),
   * or metadata and data clusters ('falloc', 'full') for the new range.
   */
  async grow(newSize: number, prealloc: PreallocMode = 'off'): Promise<void> {
    this.#checkWritable();
    await this.#lock.exclusive(() => this.#grow(newSize, prealloc));
  }

  /** grow() with the lock held (also used by truncate.ts and snapshots.ts). */
  async #grow(newSize: number, prealloc: PreallocMode): Promise<void> {
    if (newSize % 512 !== 0) {
      throw new InvalidArgumentError('The new size must be a multiple of 512', {
        code: 'VMF_RESIZE',
      });
    }
    if (newSize < this.size) {
      throw new NotSupportedError('Shrinking qcow2 images is not supported here', {
        code: 'VMF_RESIZE',
      });
    }
    if (this.snapshots.length > 0 && this.header.version < 3) {
      throw new NotSupportedError("Can't resize a v2 image which has snapshots");
    }
    await this.#observer?.beforeResize(newSize);
    await this.#markDirty();
    const oldSize = this.size;
    await this.#growL1(Math.ceil(newSize / this.layout.l2Coverage), true);
    let mode = prealloc;
    if (hasFeature.dataFileRaw(this.header) && mode === 'off') mode = 'metadata';
    const hasDataFile = hasFeature.dataFile(this.header);
    // bdrv_co_truncate(): a backing file that would show through the new area must not, so
    // the new area is zeroed (BDRV_REQ_ZERO_WRITE). With falloc/full the file's own zeroing
    // covers it and the new subclusters are marked allocated instead.
    let zeroWrite = newSize > oldSize && this.backing !== undefined && this.backing.size > oldSize;
    try {
      if (mode === 'off') {
        if (hasDataFile) await truncateHostFile(this.dataStorage, newSize, 'off');
      } else if (mode === 'metadata' || hasDataFile) {
        this.header.size = Math.max(this.header.size, newSize); // let the allocator see the range
        await this.#preallocate(oldSize, newSize, mode);
      } else {
        await this.#preallocateData(oldSize, newSize, mode, zeroWrite);
        zeroWrite = false;
      }
      if (zeroWrite) await this.#zeroNewArea(oldSize, newSize);
    } catch (err) {
      this.header.size = oldSize;
      throw err;
    }
    if (mode !== 'off') await this.#flushMetadata();
    this.header.size = newSize;
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(newSize));
    await this.storage.write(b, 24);
    this.#observer?.afterResize(newSize);
  }

  /**
   * qcow2_co_truncate's BDRV_REQ_ZERO_WRITE step: zero clusters from the first subcluster
   * boundary, explicit zeros for the unaligned head. v2 images over a backing file cannot
   * express zero clusters, as in QEMU.
   */
  async #zeroNewArea(oldSize: number, newSize: number): Promise<void> {
    const zeroStart = Math.ceil(oldSize / this.layout.subclusterSize) * this.layout.subclusterSize;
    this.header.size = newSize;
    if (
      newSize > zeroStart &&
      !(await this.#subclusterZeroize(zeroStart, newSize - zeroStart, false))
    ) {
      throw new NotSupportedError('Failed to zero out new clusters: Operation not supported', {
        code: 'VMF_ENOTSUP',
      });
    }
    if (zeroStart > oldSize) {
      await this.#write(new Uint8Array(Math.min(zeroStart, newSize) - oldSize), oldSize);
    }
  }

  /** preallocate_co(): allocate (but do not write) clusters for [from, to). */
  async #preallocate(from: number, to: number, mode: PreallocMode): Promise<void> {
    const { clusterSize, l2Coverage, l2Entries } = this.layout;
    let pos = from;
    let hint: number | undefined;
    let runStart = 0;
    let runEnd = 0;
    const hasDataFile = hasFeature.dataFile(this.header);
    while (pos < to) {
      const { table, tableOffset } = await this.#getClusterTable(pos);
      const stop = Math.min(to, (Math.floor(pos / l2Coverage) + 1) * l2Coverage);
      while (pos < stop) {
        const idx = Math.floor(pos / clusterSize) % l2Entries;
        const e = readL2Entry(table, idx, this.layout);
        const cEnd = Math.min(stop, (Math.floor(pos / clusterSize) + 1) * clusterSize);
        if (this.#canReuse(e)) {
          hint = entryOffset(e) + clusterSize;
          runStart = entryOffset(e) + (pos % clusterSize);
          runEnd = entryOffset(e) + (cEnd - Math.floor(pos / clusterSize) * clusterSize);
          pos = cEnd;
          continue;
        }
        // A run of clusters needing allocation, within this table.
        let n = 1;
        while (
          Math.floor(pos / clusterSize) + n < Math.ceil(stop / clusterSize) &&
          !this.#canReuse(readL2Entry(table, (idx + n) % l2Entries, this.layout))
        ) {
          n++;
        }
        let host: number;
        if (hasDataFile) host = Math.floor(pos / clusterSize) * clusterSize;
        else {
          let got = 0;
          host = 0;
          if (hint !== undefined) {
            got = await this.#refcounts.allocClustersAt(hint, n);
            if (got > 0) host = hint;
          }
          if (got === 0) {
            host = await this.#refcounts.allocClusters(n);
            got = n;
          }
          n = got;
        }
        for (let i = 0; i < n; i++) {
          const old = readL2Entry(table, (idx + i) % l2Entries, this.layout);
          // Preallocated clusters: normal entries with no subcluster marked allocated.
          writeL2Entry(
            table,
            (idx + i) % l2Entries,
            this.layout,
            makeEntry(
              host + i * clusterSize,
              { copied: true },
              this.layout.extendedL2 ? { zeroBits: old.zeroBits } : {},
            ),
          );
          this.#freeEntry(old, false);
        }
        this.#l2.markDirty(tableOffset);
        const end = Math.min(stop, (Math.floor(pos / clusterSize) + n) * clusterSize);
        runStart = host + (pos % clusterSize);
        runEnd = host + (end - Math.floor(pos / clusterSize) * clusterSize);
        hint = host + n * clusterSize;
        pos = end;
      }
    }
    void runStart;
    // "Extend the image to the last allocated sector" so reads never hit EOF.
    const fileLength = await this.dataStorage.size();
    if (runEnd > fileLength) {
      await truncateHostFile(this.dataStorage, runEnd, mode === 'metadata' ? 'off' : mode);
    }
  }

  /** The falloc/full grow path: data clusters in one contiguous area after the metadata. */
  async #preallocateData(
    oldSize: number,
    newSize: number,
    mode: PreallocMode,
    allocSubclusters = false,
  ): Promise<void> {
    const { clusterSize, l2Entries } = this.layout;
    const fileLength = await this.storage.size();
    const lastCluster = await this.#lastUsedCluster(fileLength);
    const oldFileSize =
      lastCluster >= 0
        ? (lastCluster + 1) * clusterSize
        : Math.ceil(fileLength / clusterSize) * clusterSize;
    const newData =
      (Math.ceil(newSize / clusterSize) * clusterSize -
        Math.floor(oldSize / clusterSize) * clusterSize) /
      clusterSize;
    const newTables = Math.ceil(newData / l2Entries) + 1;
    const allocationStart = await this.#refcounts.refcountArea(
      oldFileSize,
      newData + newTables,
      true,
      0,
      0,
    );
    const got = await this.#refcounts.allocClustersAt(allocationStart, newData);
    if (got !== newData) throw new CorruptImageError('Failed to allocate data clusters');
    await truncateHostFile(this.storage, allocationStart + newData * clusterSize, mode);
    let host = allocationStart;
    let guest = Math.floor(oldSize / clusterSize) * clusterSize;
    let left = newData;
    while (left > 0) {
      const { table, tableOffset } = await this.#getClusterTable(guest);
      const idx = Math.floor(guest / clusterSize) % l2Entries;
      const n = Math.min(left, l2Entries - idx);
      for (let i = 0; i < n; i++) {
        const old = readL2Entry(table, idx + i, this.layout);
        writeL2Entry(
          table,
          idx + i,
          this.layout,
          makeEntry(
            host + i * clusterSize,
            { copied: true },
            !this.layout.extendedL2
              ? {}
              : allocSubclusters
                ? { allocBits: 0xffff_ffff, zeroBits: 0 }
                : { zeroBits: old.zeroBits },
          ),
        );
        this.#freeEntry(old, false);
      }
      this.#l2.markDirty(tableOffset);
      guest += n * clusterSize;
      host += n * clusterSize;
      left -= n;
    }
  }

  /** qcow2_get_last_cluster(): the highest host cluster with a non-zero refcount. */
  async #lastUsedCluster(fileLength: number): Promise<number> {
    for (let i = Math.ceil(fileLength / this.layout.clusterSize) - 1; i >= 0; i--) {
      if ((await this.#refcounts.get(i)) > 0) return i;
    }
    this.#corrupt('There are no references in the refcount table.');
  }

  /** Record a backing file (and format) in the header (qcow2_change_backing_file). */
  async setBackingFile(name: string | undefined, format: string | undefined): Promise<void> {
    this.#checkWritable();
    await this.#lock.exclusive(async () => {
      this.header.backingFile = name;
      this.header.backingFormat = name === undefined ? undefined : format;
      await this.rewriteHeader();
    });
  }

  // ---------------------------------------------------------------------------------------
  // Zeroes and discard

  async writeZeroes(
    offset: number,
    length: number,
    options: WriteZeroesOptions = {},
  ): Promise<void> {
    assertRange('write zeroes', offset, length, this.size);
    this.#checkWritable();
    if (length === 0) return;
    await this.#lock.exclusive(async () => {
      await this.#observer?.beforeGuestWrite(offset, length);
      await this.#markDirty();
      await this.#writeZeroes(offset, length, options);
      await this.#maybeApplyFrees();
    });
    if (options.fua) await this.flush();
  }

  /** bdrv_co_do_pwrite_zeroes over qcow2_co_pwrite_zeroes: aligned bulk via metadata, edges as data. */
  async #writeZeroes(offset: number, length: number, options: WriteZeroesOptions): Promise<void> {
    const g = this.layout.subclusterSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      let num: number;
      if (pos % g !== 0) num = Math.min(end - pos, g - (pos % g));
      else if (end % g !== 0 && end - pos > g) num = end - pos - (end % g);
      else num = end - pos;
      const done = await this.#zeroMetadata(pos, num, options.mayUnmap ?? false);
      if (!done) {
        if (options.noFallback) {
          throw new NotSupportedError(
            'qcow2: zeroing this range needs a data write (no fast path)',
            {
              code: 'VMF_NO_FAST_ZERO',
            },
          );
        }
        await this.#writeZeroBuffers(pos, num);
      }
      pos += num;
    }
  }

  async #writeZeroBuffers(offset: number, length: number): Promise<void> {
    const chunk = 1 << 20;
    for (let p = 0; p < length; p += chunk) {
      const n = Math.min(chunk, length - p);
      await this.#write(new Uint8Array(n), offset + p);
    }
  }

  /** qcow2_co_pwrite_zeroes; returns false where QEMU returns -ENOTSUP (caller writes zeros). */
  async #zeroMetadata(offset: number, bytes: number, mayUnmap: boolean): Promise<boolean> {
    const g = this.layout.subclusterSize;
    const head = offset % g;
    let tail = (Math.ceil((offset + bytes) / g) * g - (offset + bytes)) % g;
    if (offset + bytes === this.size) tail = 0;
    if (head || tail) {
      // Only when the rest of the subcluster already reads as zero.
      if (!(await this.#isZero(offset - head, head)) || !(await this.#isZero(offset + bytes, tail)))
        return false;
      offset -= head;
      bytes = Math.min(g, this.size - offset);
      const m = await this.#map(offset, bytes);
      if (m.kind !== 'unallocated' && m.kind !== 'zero') return false;
    }
    return this.#subclusterZeroize(offset, bytes, mayUnmap);
  }

  async #isZero(offset: number, bytes: number): Promise<boolean> {
    if (offset + bytes > this.size) bytes = this.size - offset;
    let pos = offset;
    while (pos < offset + bytes) {
      const layer = await this.#layerStatus(pos, offset + bytes - pos);
      const ext = await composeChainStatus(layer, this.backing);
      if (ext.length === 0) return false;
      for (const e of ext) {
        if (!e.zero) return false;
        pos = e.offset + e.length;
      }
    }
    return true;
  }

  /** qcow2_subcluster_zeroize. */
  async #subclusterZeroize(offset: number, bytes: number, mayUnmap: boolean): Promise<boolean> {
    const { clusterSize } = this.layout;
    if (this.header.version < 3) {
      if (!this.backing) {
        await this.#clusterDiscard(offset, bytes, false);
        return true;
      }
      return false;
    }
    let end = offset + bytes;
    const head = Math.min(end, Math.ceil(offset / clusterSize) * clusterSize) - offset;
    offset += head;
    const tail =
      end >= this.size ? 0 : end - Math.max(offset, Math.floor(end / clusterSize) * clusterSize);
    end -= tail;
    if (head) await this.#zeroSubclusters(offset - head, head);
    let pos = offset;
    while (pos < end) {
      pos = await this.#zeroInL2Table(pos, end, mayUnmap);
    }
    if (tail) await this.#zeroSubclusters(end, tail);
    return true;
  }

  async #zeroSubclusters(offset: number, bytes: number): Promise<void> {
    const g = this.layout.subclusterSize;
    const { table, tableOffset } = await this.#getClusterTable(offset);
    const idx = Math.floor(offset / this.layout.clusterSize) % this.layout.l2Entries;
    const e = readL2Entry(table, idx, this.layout);
    const type = clusterType(e, this.layout, hasFeature.dataFile(this.header));
    if (type === 'compressed') {
      // "We cannot partially zeroize compressed clusters": fall back to a data write.
      await this.#writeZeroBuffers(offset, bytes);
      return;
    }
    const sc = Math.floor((offset % this.layout.clusterSize) / g);
    const bits = bitRange(sc, sc + Math.ceil(bytes / g));
    const next = {
      ...e,
      zeroBits: (e.zeroBits | bits) >>> 0,
      allocBits: (e.allocBits & ~bits) >>> 0,
    };
    if (next.zeroBits !== e.zeroBits || next.allocBits !== e.allocBits) {
      writeL2Entry(table, idx, this.layout, next);
      this.#l2.markDirty(tableOffset);
    }
  }

  /** zero_in_l2_slice for whole clusters from `offset` up to `end` or the table's end. */
  async #zeroInL2Table(offset: number, end: number, mayUnmap: boolean): Promise<number> {
    const { clusterSize, l2Entries, l2Coverage } = this.layout;
    const { table, tableOffset } = await this.#getClusterTable(offset);
    const stop = Math.min(end, (Math.floor(offset / l2Coverage) + 1) * l2Coverage);
    const hasDataFile = hasFeature.dataFile(this.header);
    let changed = false;
    for (let pos = offset; pos < stop; pos += clusterSize) {
      const idx = Math.floor(pos / clusterSize) % l2Entries;
      const e = readL2Entry(table, idx, this.layout);
      const type = clusterType(e, this.layout, hasDataFile);
      const allocated = type === 'normal' || type === 'zero-alloc' || type === 'compressed';
      const unmap = type === 'compressed' || (mayUnmap && allocated);
      const next: L2Entry = unmap ? { ...EMPTY_ENTRY } : { ...e };
      if (this.layout.extendedL2) {
        next.zeroBits = Number(L2_BITMAP_ALL_ZEROES >> 32n);
        next.allocBits = 0;
      } else {
        next.lo = (next.lo | 1) >>> 0;
      }
      if (
        next.hi === e.hi &&
        next.lo === e.lo &&
        next.zeroBits === e.zeroBits &&
        next.allocBits === e.allocBits
      )
        continue;
      writeL2Entry(table, idx, this.layout, next);
      changed = true;
      if (unmap) this.#freeEntry(e, true);
    }
    if (changed) this.#l2.markDirty(tableOffset);
    this.#invalidateDecompressed();
    return Math.min(stop, end);
  }

  /**
   * Write whole clusters compressed (qcow2_co_pwritev_compressed_part): `offset` is cluster
   * aligned and `buf` is one cluster, or shorter for the image's last cluster. A cluster that
   * does not compress is written normally. The cluster must not be allocated ("Compression can't
   * overwrite anything"). `compressed` may carry the already compressed bytes (callers compress
   * in parallel); undefined means "compress here".
   */
  async writeCompressed(
    buf: Uint8Array,
    offset: number,
    compressed?: Uint8Array | null,
  ): Promise<void> {
    const cs = this.layout.clusterSize;
    assertRange('write compressed', offset, buf.length, this.size);
    this.#checkWritable();
    if (hasFeature.dataFile(this.header)) {
      throw new NotSupportedError('Compression is not supported with an external data file');
    }
    if (offset % cs !== 0 || (buf.length !== cs && offset + buf.length !== this.size)) {
      throw new InvalidArgumentError('Compressed writes must cover whole clusters');
    }
    let data = buf;
    if (buf.length < cs) {
      data = new Uint8Array(cs);
      data.set(buf);
    }
    const packed =
      compressed === undefined ? compressCluster(this.header.compressionType, data) : compressed;
    if (!packed) {
      await this.write(buf, offset);
      return;
    }
    await this.#lock.exclusive(async () => {
      await this.#observer?.beforeGuestWrite(offset, buf.length);
      await this.#markDirty();
      const { table, tableOffset } = await this.#getClusterTable(offset);
      const idx = Math.floor(offset / cs) % this.layout.l2Entries;
      if (entryOffset(readL2Entry(table, idx, this.layout)) !== 0) {
        throw new InvalidArgumentError("Compression can't overwrite anything", { code: 'VMF_EIO' });
      }
      const host = await this.#refcounts.allocBytes(packed.length);
      writeL2Entry(table, idx, this.layout, makeCompressedEntry(host, packed.length, this.layout));
      this.#l2.markDirty(tableOffset);
      this.#checkOverlap(host, packed.length);
      await this.dataStorage.write(packed, host);
      this.#invalidateDecompressed();
    });
  }

  /**
   * Read an internal snapshot instead of the active image (qcow2_snapshot_load_tmp; read-only
   * devices only). Matches by id and/or name; the virtual size stays the current one, as in QEMU.
   */
  async loadSnapshotTmp(id: string | undefined, name: string | undefined): Promise<void> {
    if (!this.#readOnly)
      throw new InvalidArgumentError('A snapshot can only be loaded into a read-only image');
    const sn = this.snapshots.find(
      (x) => (id === undefined || x.id === id) && (name === undefined || x.name === name),
    );
    if (!sn) throw new InvalidArgumentError("Can't find snapshot", { code: 'VMF_ENOENT' });
    if (sn.l1Size > MAX_L1_SIZE_BYTES / 8)
      throw new CorruptImageError('Snapshot L1 table too large');
    if (
      sn.l1TableOffset % this.layout.clusterSize !== 0 ||
      Number.MAX_SAFE_INTEGER - sn.l1Size * 8 < sn.l1TableOffset
    ) {
      throw new CorruptImageError('Snapshot L1 table offset invalid');
    }
    const bytes = new Uint8Array(sn.l1Size * 8);
    await this.storage.read(bytes, sn.l1TableOffset);
    const l1 = new Uint32Array(sn.l1Size * 2);
    for (let i = 0; i < l1.length; i++)
      l1[i] =
        ((bytes[i * 4]! << 24) |
          (bytes[i * 4 + 1]! << 16) |
          (bytes[i * 4 + 2]! << 8) |
          bytes[i * 4 + 3]!) >>>
        0;
    await this.#lock.exclusive(async () => {
      this.setL1(l1);
      this.#invalidateDecompressed();
    });
  }

  /** bdrv_snapshot_load_tmp_by_id_or_name(): try the text as an id, then as a name. */
  async loadSnapshotByIdOrName(idOrName: string): Promise<void> {
    try {
      await this.loadSnapshotTmp(idOrName, undefined);
    } catch {
      await this.loadSnapshotTmp(undefined, idOrName);
    }
  }

  /**
   * Drop all guest data (bdrv_make_empty, used by qemu-img commit without -d). Like QEMU's
   * qcow2_make_empty(): a v3 image without snapshots, bitmaps, external data or LUKS is reset
   * to a freshly created layout (make_completely_empty); otherwise every cluster is discarded.
   */
  async makeEmpty(): Promise<void> {
    this.#checkWritable();
    const cs = this.layout.clusterSize;
    const l1Clusters = Math.ceil(this.l1Size / (cs / 8));
    const completely =
      this.header.version >= 3 &&
      this.snapshots.length === 0 &&
      !this.header.bitmaps &&
      3 + l1Clusters <= this.layout.refblockEntries &&
      this.header.cryptMethod !== 2 &&
      !hasFeature.dataFile(this.header);
    await this.#lock.exclusive(async () => {
      if (!completely) {
        await this.#markDirty();
        await this.#clusterDiscard(0, this.size, true);
        await this.#flushMetadata();
        return;
      }
      // make_completely_empty(): set the dirty bit (refcounts are about to be rebuilt), zero
      // the L1 and the clusters that become reftable, refblock and L1, point the header at
      // them, and allocate them afresh.
      await this.#flushMetadata();
      this.#l2.clear();
      this.#refcounts.cache.clear();
      this.header.incompatibleFeatures |= INCOMPAT_DIRTY;
      await this.#writeIncompatibleFeatures();
      await this.storage.flush();
      const zeros = new Uint8Array((2 + l1Clusters) * cs);
      await this.storage.write(new Uint8Array(l1Clusters * cs), this.header.l1TableOffset);
      await this.storage.write(zeros, cs);
      const ptrs = new Uint8Array(20);
      const v = new DataView(ptrs.buffer);
      v.setBigUint64(0, BigInt(3 * cs));
      v.setBigUint64(8, BigInt(cs));
      v.setUint32(16, 1);
      await this.storage.write(ptrs, 40);
      await this.storage.flush();
      this.header.l1TableOffset = 3 * cs;
      this.header.refcountTableOffset = cs;
      this.header.refcountTableClusters = 1;
      this.setL1(new Uint32Array(this.l1Size * 2));
      const rt = new Uint8Array(8);
      new DataView(rt.buffer).setBigUint64(0, BigInt(2 * cs));
      await this.storage.write(rt, cs);
      await this.storage.flush();
      this.#refcounts.reset(cs, [2 * cs, ...new Array<number>(cs / 8 - 1).fill(0)]);
      const first = await this.#refcounts.allocClusters(Math.ceil((3 * cs + this.l1Size * 8) / cs));
      if (first !== 0) throw new Error('internal error: first cluster in emptied image is in use');
      await this.#refcounts.cache.flush();
      this.header.incompatibleFeatures &= ~INCOMPAT_DIRTY;
      await this.#writeIncompatibleFeatures();
      await this.storage.truncate((3 + l1Clusters) * cs);
      this.#invalidateDecompressed();
    });
  }

  /** After the last compressed write: align the file end to a sector (qcow2 "EOF" write). */
  async alignFileEnd(): Promise<void> {
    const len = await this.storage.size();
    if (len % 512 !== 0) await this.storage.truncate(Math.ceil(len / 512) * 512);
  }

  async discard(offset: number, length: number): Promise<void> {
    assertRange('discard', offset, length, this.size);
    this.#checkWritable();
    if (length === 0) return;
    await this.#lock.exclusive(async () => {
      // QEMU marks the whole requested range dirty, whatever the driver discards.
      await this.#observer?.beforeGuestWrite(offset, length);
      // bdrv_co_pdiscard: only whole clusters (pdiscard_alignment), plus the final partial one.
      const cs = this.layout.clusterSize;
      const start = Math.ceil(offset / cs) * cs;
      let end = Math.floor((offset + length) / cs) * cs;
      if (offset + length === this.size && this.size % cs !== 0) end = this.size;
      if (end <= start) return;
      // QEMU: "If the image does not support QCOW_OFLAG_ZERO then discarding clusters could
      // expose stale data from the backing file."
      if (this.header.version < 3 && this.backing) return;
      await this.#markDirty();
      await this.#clusterDiscard(start, end - start, false);
      await this.#maybeApplyFrees();
    });
  }

  /** qcow2_cluster_discard / discard_in_l2_slice. */
  async #clusterDiscard(offset: number, bytes: number, fullDiscard: boolean): Promise<void> {
    const { clusterSize, l2Entries, l2Coverage } = this.layout;
    const end = offset + bytes;
    const hasDataFile = hasFeature.dataFile(this.header);
    let pos = offset;
    while (pos < end) {
      const { table, tableOffset } = await this.#getClusterTable(pos);
      const stop = Math.min(end, (Math.floor(pos / l2Coverage) + 1) * l2Coverage);
      let changed = false;
      for (; pos < stop; pos += clusterSize) {
        const idx = Math.floor(pos / clusterSize) % l2Entries;
        const e = readL2Entry(table, idx, this.layout);
        const type = clusterType(e, this.layout, hasDataFile);
        const allocated = type === 'normal' || type === 'zero-alloc' || type === 'compressed';
        let next: L2Entry = e;
        if (fullDiscard) next = { ...EMPTY_ENTRY };
        else if (this.backing || allocated) {
          if (this.layout.extendedL2) next = { hi: 0, lo: 0, zeroBits: 0xffff_ffff, allocBits: 0 };
          else next = { ...EMPTY_ENTRY, lo: this.header.version >= 3 ? 1 : 0 };
        }
        if (
          next.hi === e.hi &&
          next.lo === e.lo &&
          next.zeroBits === e.zeroBits &&
          next.allocBits === e.allocBits
        )
          continue;
        writeL2Entry(table, idx, this.layout, next);
        changed = true;
        this.#freeEntry(e, true);
      }
      if (changed) this.#l2.markDirty(tableOffset);
      pos = stop;
    }
    this.#invalidateDecompressed();
  }

  // ---------------------------------------------------------------------------------------
  // Flush, overlap checks, close

  /** Write metadata in crash-safe order: refcount increments, L2 tables, then deferred frees. */
  async #flushMetadata(): Promise<void> {
    await this.#refcounts.cache.flush();
    await this.#l2.flush();
    if (this.#refcounts.hasPendingFrees) await this.#refcounts.applyPendingFrees();
    await this.#refcounts.cache.flush();
  }

  async #maybeApplyFrees(): Promise<void> {
    // Deferred frees keep clusters busy; do not let them pile up without bound.
    if (this.#refcounts.pendingFreeCount > 1024) await this.#flushMetadata();
  }

  async flush(): Promise<void> {
    this.#checkOpen();
    if (this.#readOnly) return;
    await this.#lock.exclusive(async () => {
      await this.#flushMetadata();
      await this.storage.flush();
      if (this.dataStorage !== this.storage) await this.dataStorage.flush();
    });
  }

  /** Metadata regions a data write must never touch (QEMU's overlap check, "cached" template). */
  #checkOverlap(offset: number, length: number): void {
    this.#checkOverlapExcept(offset, length, undefined);
  }

  /**
   * QEMU's pre-write overlap check for metadata written straight to the image file (bitmap
   * directory, tables and data), also when guest data lives in an external data file.
   */
  checkMetadataWrite(offset: number, length: number): void {
    this.#checkOverlapExcept(offset, length, 'metadata');
  }

  #checkOverlapExcept(
    offset: number,
    length: number,
    allowed: 'l1' | 'metadata' | undefined,
  ): void {
    if (this.dataStorage !== this.storage && allowed === undefined) return; // data lives elsewhere
    const cs = this.layout.clusterSize;
    const end = offset + length;
    const overlaps = (start: number, len: number) => len > 0 && offset < start + len && start < end;
    let what: string | undefined;
    if (overlaps(0, cs)) what = 'qcow2_header';
    else if (allowed !== 'l1' && overlaps(this.header.l1TableOffset, this.l1Size * 8))
      what = 'active L1 table';
    else if (overlaps(this.#refcounts.tableOffset, this.#refcounts.table.length * 8))
      what = 'refcount table';
    else if (overlaps(this.header.snapshotsOffset, this.header.nbSnapshots ? cs : 0))
      what = 'snapshot table';
    else if (
      this.header.bitmaps &&
      (this.header.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n &&
      overlaps(this.header.bitmaps.directoryOffset, this.header.bitmaps.directorySize)
    )
      what = 'bitmap directory';
    else {
      const first = Math.floor(offset / cs);
      const last = Math.floor((end - 1) / cs);
      if (last - first < 4096) {
        // The lowest cluster that is a refcount block or an active L2 table (a refcount block
        // first). Data writes span many clusters and the tables are few: look the tables up
        // in the range when that is less work than looking each cluster up.
        const refblocks = this.#refcounts.refblockOffsets();
        const l2 = this.#activeL2Offsets();
        if (last - first + 1 <= refblocks.size + l2.size) {
          for (let c = first; c <= last && !what; c++) {
            if (refblocks.has(c * cs)) what = 'refcount block';
            else if (l2.has(c * cs)) what = 'active L2 table';
          }
        } else {
          const lowest = (set: ReadonlySet<number>) => {
            let min = Infinity;
            for (const o of set) if (o >= first * cs && o <= last * cs && o < min) min = o;
            return min;
          };
          const r = lowest(refblocks);
          const t = lowest(l2);
          if (r !== Infinity && r <= t) what = 'refcount block';
          else if (t !== Infinity) what = 'active L2 table';
        }
      }
    }
    if (what && allowed !== 'l1') {
      void this.#markCorrupt();
      throw new CorruptImageError(
        `qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with ${what})`,
        { code: 'VMF_QCOW2_OVERLAP' },
      );
    }
  }

  /** Host offsets of the active L2 tables. */
  #activeL2Offsets(): Set<number> {
    if (!this.#activeL2) {
      this.#activeL2 = new Set();
      for (let i = 0; i < this.l1Size; i++) {
        const o = this.l1Entry(i).offset;
        if (o !== 0) this.#activeL2.add(o);
      }
    }
    return this.#activeL2;
  }

  async #markCorrupt(): Promise<void> {
    if (this.#readOnly) return;
    this.header.incompatibleFeatures |= INCOMPAT_CORRUPT;
    try {
      await this.#writeIncompatibleFeatures();
      await this.storage.flush();
    } catch {
      /* the write error that got us here is what the caller sees */
    }
  }

  /**
   * Write back cached metadata in crash-safe order (qcow2_flush_caches). Only with the metadata
   * lock held: inside withExclusiveLock() or a GuestWriteObserver hook.
   */
  async flushMetadataLocked(): Promise<void> {
    await this.#flushMetadata();
  }

  /** Install the observer of guest writes (persistent bitmaps; attached by openQcow2). */
  attachWriteObserver(observer: GuestWriteObserver): void {
    this.#observer = observer;
  }

  get writeObserver(): GuestWriteObserver | undefined {
    return this.#observer;
  }

  /** Rewrite cluster 0 (header, extensions, backing name) from `this.header`. */
  async rewriteHeader(): Promise<void> {
    const buf = encodeHeader(this.header);
    await this.storage.write(buf, 0);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    let observerError: unknown;
    try {
      // After a fatal corruption event QEMU drops the driver: nothing more is written.
      if (!this.#readOnly && this.#fatalCorruption === undefined) {
        await this.#lock.exclusive(async () => {
          // Persistent bitmaps first (qcow2_inactivate); a failure there must not cost the
          // metadata write-back below, so it is reported after it.
          try {
            await this.#observer?.beforeClose();
          } catch (err) {
            observerError = err;
          }
          await this.#flushMetadata();
          if (
            this.#dirtyMarked &&
            (this.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n &&
            (this.header.incompatibleFeatures & INCOMPAT_CORRUPT) === 0n
          ) {
            // qcow2_mark_clean: everything is on disk, the image is consistent again.
            await this.storage.flush();
            this.header.incompatibleFeatures &= ~INCOMPAT_DIRTY;
            await this.#writeIncompatibleFeatures();
          }
          await this.storage.flush();
          if (this.dataStorage !== this.storage) await this.dataStorage.flush();
        });
      }
    } finally {
      this.#closed = true;
      await this.storage.close().catch(() => undefined);
      if (this.#ownsData && this.dataStorage !== this.storage)
        await this.dataStorage.close().catch(() => undefined);
      await this.backing?.close().catch(() => undefined);
    }
    if (observerError !== undefined) throw observerError;
  }

  // ---------------------------------------------------------------------------------------
  // Internals for check / info

  /** Read an L2 table (any, including snapshot ones) through the cache. */
  async readL2Table(offset: number): Promise<Uint8Array> {
    return this.#l2.get(offset);
  }

  clusterTypeOf(e: L2Entry): ClusterType {
    return clusterType(e, this.layout, hasFeature.dataFile(this.header));
  }

  hasBitmapsAutoclear(): boolean {
    return (this.header.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n;
  }

  /** Run `fn` with the metadata lock held exclusively (check/repair). */
  withExclusiveLock<T>(fn: () => Promise<T>): Promise<T> {
    return this.#lock.exclusive(fn);
  }

  /** Replace the in-memory L1 (after a repair rewrote it). */
  setL1(l1: Uint32Array): void {
    this.#l1 = l1;
    this.#activeL2 = undefined;
  }

  l1Raw(): Uint32Array {
    return this.#l1;
  }

  // ---------------------------------------------------------------------------------------
  // Internal snapshots and resizing (implemented in snapshots.ts and truncate.ts)

  /** Create an internal snapshot of the active state (qemu-img snapshot -c). */
  createSnapshot(info: SnapshotCreateInfo): Promise<Qcow2Snapshot> {
    return createSnapshot(this, info);
  }

  /** Make a snapshot (found by id, then by name) the active state (qemu-img snapshot -a). */
  applySnapshot(idOrName: string): Promise<void> {
    return applySnapshot(this, idOrName);
  }

  /** Delete the first snapshot matching `id` and `name` (either may be undefined). */
  deleteSnapshot(id: string | undefined, name: string | undefined): Promise<Qcow2Snapshot> {
    return deleteSnapshot(this, id, name);
  }

  /** Grow or (with allowShrink) shrink the virtual size (qcow2_co_truncate). */
  truncate(newSize: number, options: Qcow2TruncateOptions = {}): Promise<void> {
    return truncateQcow2(this, newSize, options);
  }

  /**
   * Unlocked building blocks for the operations that live in their own files (snapshots.ts,
   * truncate.ts, amend.ts). Use them only inside withExclusiveLock(); they keep this file's
   * crash-ordering rules (see the top of the file).
   */
  internals(): Qcow2Internals {
    return {
      checkWritable: () => this.#checkWritable(),
      flushMetadata: () => this.#flushMetadata(),
      growL1: (minSize, exact) => this.#growL1(minSize, exact),
      grow: (newSize, prealloc) => this.#grow(newSize, prealloc),
      clusterDiscard: (offset, bytes, full) => this.#clusterDiscard(offset, bytes, full),
      checkOverlap: (offset, length, allowL1 = false) =>
        this.#checkOverlapExcept(offset, length, allowL1 ? 'l1' : undefined),
      tablesChanged: () => {
        this.#activeL2 = undefined;
        this.#invalidateDecompressed();
      },
      lastUsedCluster: (fileLength) => this.#lastUsedCluster(fileLength),
    };
  }
}

/** See Qcow2Device.internals(). */
export interface Qcow2Internals {
  checkWritable(): void;
  /** Refcount increments, L2 tables, deferred frees, in that order. */
  flushMetadata(): Promise<void>;
  /** qcow2_grow_l1_table. */
  growL1(minSize: number, exact: boolean): Promise<void>;
  /** grow() without taking the lock. */
  grow(newSize: number, prealloc: PreallocMode): Promise<void>;
  /** qcow2_cluster_discard (full = entries become unallocated, not zero). */
  clusterDiscard(offset: number, bytes: number, full: boolean): Promise<void>;
  /** qcow2_pre_write_overlap_check for a metadata write (allowL1: rewriting the active L1). */
  checkOverlap(offset: number, length: number, allowL1?: boolean): void;
  /** The active L1 or the tables behind it changed outside the device's own paths. */
  tablesChanged(): void;
  /** qcow2_get_last_cluster. */
  lastUsedCluster(fileLength: number): Promise<number>;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const nonEmpty = parts.filter((p) => p.length > 0);
  if (nonEmpty.length === 1) return nonEmpty[0]!;
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/**
 * Merge pieces that are contiguous on the host (and in the guest) into single writes. Pieces
 * that are consecutive views of one buffer (full clusters of the caller's data) are written
 * straight from it, without copying.
 */
function contiguousGroups(pieces: DataPiece[]): { hostOffset: number; parts: Uint8Array[] }[] {
  const groups: { hostOffset: number; parts: Uint8Array[]; len: number; guestOffset: number }[] =
    [];
  for (const p of pieces) {
    const len = p.parts.reduce((n, part) => n + part.length, 0);
    const last = groups[groups.length - 1];
    if (
      last &&
      last.hostOffset + last.len === p.hostOffset &&
      last.guestOffset + last.len === p.guestOffset
    ) {
      last.parts.push(...p.parts);
      last.len += len;
    } else {
      groups.push({
        hostOffset: p.hostOffset,
        parts: [...p.parts],
        len,
        guestOffset: p.guestOffset,
      });
    }
  }
  return groups;
}

/** One view over `parts` if they are adjacent views of the same buffer, else a copy. */
function joinViews(parts: Uint8Array[]): Uint8Array {
  const first = parts[0]!;
  let end = first.byteOffset + first.length;
  let adjacent = true;
  for (let i = 1; i < parts.length && adjacent; i++) {
    const p = parts[i]!;
    adjacent = p.buffer === first.buffer && p.byteOffset === end;
    end += p.length;
  }
  if (adjacent) return new Uint8Array(first.buffer, first.byteOffset, end - first.byteOffset);
  return concat(...parts);
}
