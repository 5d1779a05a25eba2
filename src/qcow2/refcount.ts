// Host cluster reference counts (qcow2.rst "Host cluster management"): the refcount table, the
// refcount blocks behind it, and cluster allocation. The algorithms (free-cluster search,
// self-describing refcount blocks, refcount table growth) follow QEMU's qcow2-refcount.c so
// that vmforge lays out images the way qemu-img does.
//
// Crash ordering: increments go to the refblock cache at once and reach the disk before any L2
// table that references the new clusters (the L2 cache's beforeWriteback flushes this cache).
// Decrements are queued and applied only after the L2/L1 updates that dropped the references
// are on disk (applyPendingFrees), so a killed writer leaks clusters at worst and never leaves a
// reference to a free cluster.

import { CorruptImageError, printfHexAlt, readU32BE, writeU32BE } from '../core/index.js';
import type { Storage } from '../block/storage.js';
import { MAX_CLUSTER_OFFSET, MAX_REFTABLE_SIZE_BYTES } from './constants.js';
import type { Layout } from './layout.js';
import { TableCache } from './table-cache.js';

/** Read refcount `index` of a refcount block of 2^order-bit entries. */
export function getRefcount(block: Uint8Array, index: number, order: number): number {
  switch (order) {
    case 0:
      return (block[index >>> 3]! >> (index & 7)) & 1;
    case 1:
      return (block[index >>> 2]! >> (2 * (index & 3))) & 3;
    case 2:
      return (block[index >>> 1]! >> (4 * (index & 1))) & 15;
    case 3:
      return block[index]!;
    case 4:
      return (block[2 * index]! << 8) | block[2 * index + 1]!;
    case 5:
      return readU32BE(block, 4 * index);
    default:
      return readU32BE(block, 8 * index) * 0x1_0000_0000 + readU32BE(block, 8 * index + 4);
  }
}

export function setRefcount(block: Uint8Array, index: number, order: number, value: number): void {
  switch (order) {
    case 0:
      block[index >>> 3] = (block[index >>> 3]! & ~(1 << (index & 7))) | (value << (index & 7));
      return;
    case 1: {
      const sh = 2 * (index & 3);
      block[index >>> 2] = (block[index >>> 2]! & ~(3 << sh)) | (value << sh);
      return;
    }
    case 2: {
      const sh = 4 * (index & 1);
      block[index >>> 1] = (block[index >>> 1]! & ~(15 << sh)) | (value << sh);
      return;
    }
    case 3:
      block[index] = value;
      return;
    case 4:
      block[2 * index] = value >>> 8;
      block[2 * index + 1] = value & 0xff;
      return;
    case 5:
      writeU32BE(block, 4 * index, value);
      return;
    default:
      writeU32BE(block, 8 * index, Math.floor(value / 0x1_0000_0000));
      writeU32BE(block, 8 * index + 4, value % 0x1_0000_0000);
  }
}

/**
 * Size of the refcount structures needed to cover `clusters` clusters, as QEMU computes it
 * (qcow2_refcount_metadata_size): iterate to the fixed point where refcount blocks and table
 * clusters also count themselves.
 */
export function refcountMetadataSize(
  clusters: number,
  clusterSize: number,
  refcountOrder: number,
  generousIncrease: boolean,
): { bytes: number; blocks: number; tableClusters: number } {
  const blocksPerTableCluster = clusterSize / 8;
  const refcountsPerBlock = (clusterSize * 8) / 2 ** refcountOrder;
  let table = 0;
  let blocks = 0;
  let n = 0;
  let last: number;
  let generous = generousIncrease;
  let c = clusters;
  do {
    last = n;
    blocks = Math.ceil((c + table + blocks) / refcountsPerBlock);
    table = Math.ceil(blocks / blocksPerTableCluster);
    n = c + blocks + table;
    if (n === last && generous) {
      c += Math.ceil(table / 2);
      n = 0;
      generous = false;
    }
  } while (n !== last);
  return { bytes: (blocks + table) * clusterSize, blocks, tableClusters: table };
}

/** Thrown internally when refcount structures were allocated and the caller must search again. */
export class RetryAllocation extends Error {}

export interface RefcountState {
  tableOffset: number;
  tableClusters: number;
}

export class Refcounts {
  readonly layout: Layout;
  readonly storage: Storage;
  readonly cache: TableCache;
  /** Reftable entries (host offsets of refcount blocks; 0 = none). */
  table: number[];
  tableOffset: number;
  /** First cluster index that may be free (QEMU's free_cluster_index). */
  freeClusterIndex = 0;
  /** Decrements deferred until the references are gone from disk. */
  #pendingFrees: { offset: number; length: number; discard: boolean }[] = [];
  /** Called when a cluster's refcount drops to 0 (drop cached tables stored there). */
  onClusterZero: ((offset: number) => void) | undefined;
  #refblockSet: Set<number> | undefined;
  /** Host ranges freed and to be punched in the file (QEMU's discard passthrough). */
  onClusterFreed: ((offset: number, length: number) => Promise<void>) | undefined;
  /** Persist the reftable location in the header (after a reftable move). */
  writeHeaderReftable: (offset: number, clusters: number) => Promise<void>;
  /** Flush the L2 cache (and L1): a reftable update must not overtake pending L2 writes. */
  flushL2: () => Promise<void> = async () => {};

  constructor(
    storage: Storage,
    layout: Layout,
    table: number[],
    tableOffset: number,
    cacheBytes: number,
    writeHeaderReftable: (offset: number, clusters: number) => Promise<void>,
  ) {
    this.storage = storage;
    this.layout = layout;
    this.table = table;
    this.tableOffset = tableOffset;
    this.cache = new TableCache(storage, layout.clusterSize, cacheBytes);
    this.writeHeaderReftable = writeHeaderReftable;
  }

  get tableClusters(): number {
    return (this.table.length * 8) / this.layout.clusterSize;
  }

  /** Change one in-memory reftable entry (the caller writes the table; qcow2_shrink_reftable). */
  setTableEntry(index: number, offset: number): void {
    this.table[index] = offset;
    this.#refblockSet = undefined;
  }

  #blockIndexOf(clusterIndex: number): { tableIndex: number; index: number } {
    const e = this.layout.refblockEntries;
    return { tableIndex: Math.floor(clusterIndex / e), index: clusterIndex % e };
  }

  #refblockOffset(tableIndex: number): number {
    const off = this.table[tableIndex] ?? 0;
    if (off % this.layout.clusterSize !== 0) {
      throw new CorruptImageError(
        `Refblock offset 0x${off.toString(16)} unaligned (reftable index: ${printfHexAlt(tableIndex)})`,
      );
    }
    return off;
  }

  /** The refcount of host cluster `clusterIndex` (0 beyond the table). */
  async get(clusterIndex: number): Promise<number> {
    const { tableIndex, index } = this.#blockIndexOf(clusterIndex);
    if (tableIndex >= this.table.length) return 0;
    const off = this.#refblockOffset(tableIndex);
    if (off === 0) return 0;
    const block = await this.cache.get(off);
    return getRefcount(block, index, this.layout.refcountOrder);
  }

  /**
   * How many of the `n` clusters from index `first` on are free (refcount 0), counted up to the
   * first one in use: one refcount block lookup per block, not per cluster (a convert allocates
   * thousands of clusters, and an await per cluster was most of its planning time).
   */
  async #freeRun(first: number, n: number): Promise<number> {
    const entries = this.layout.refblockEntries;
    const order = this.layout.refcountOrder;
    let c = first;
    const end = first + n;
    while (c < end) {
      const tableIndex = Math.floor(c / entries);
      if (tableIndex >= this.table.length) return n; // beyond the table: all free
      const blockEnd = Math.min(end, (tableIndex + 1) * entries);
      const off = this.#refblockOffset(tableIndex);
      if (off !== 0) {
        const block = await this.cache.get(off);
        for (; c < blockEnd; c++) {
          if (getRefcount(block, c - tableIndex * entries, order) !== 0) return c - first;
        }
      }
      c = blockEnd;
    }
    return n;
  }

  /** Find `n` contiguous free clusters from freeClusterIndex (QEMU alloc_clusters_noref). */
  async #findFree(n: number): Promise<number> {
    for (;;) {
      const idx = this.freeClusterIndex;
      const free = await this.#freeRun(idx, n);
      if (free === n) break;
      this.freeClusterIndex = idx + free + 1; // past the cluster in use
    }
    this.freeClusterIndex += n;
    const start = this.freeClusterIndex - n;
    if ((start + n) * this.layout.clusterSize - 1 > MAX_CLUSTER_OFFSET) {
      throw new CorruptImageError(
        'Cannot allocate clusters: image would exceed the maximum qcow2 file size',
      );
    }
    return start * this.layout.clusterSize;
  }

  /** Allocate `n` contiguous clusters anywhere; returns the host offset (refcount 1 each). */
  async allocClusters(n: number): Promise<number> {
    for (;;) {
      const offset = await this.#findFree(n);
      try {
        await this.update(offset, n * this.layout.clusterSize, 1);
        return offset;
      } catch (err) {
        if (!(err instanceof RetryAllocation)) throw err;
      }
    }
  }

  /**
   * Allocate up to `n` clusters starting exactly at `offset` (QEMU qcow2_alloc_clusters_at);
   * returns how many were free and are now allocated (0 if the first one is taken).
   */
  async allocClustersAt(offset: number, n: number): Promise<number> {
    for (;;) {
      const first = offset / this.layout.clusterSize;
      const free = await this.#freeRun(first, n);
      if (free === 0) return 0;
      try {
        await this.update(offset, free * this.layout.clusterSize, 1);
        return free;
      } catch (err) {
        if (!(err instanceof RetryAllocation)) throw err;
      }
    }
  }

  /**
   * Add `delta` (+1 / -1 or more) to the refcount of every cluster touched by [offset, +length).
   * Immediate: use `free()` for decrements of clusters whose references were just removed.
   */
  async update(offset: number, length: number, delta: number): Promise<void> {
    if (length <= 0) return;
    const cs = this.layout.clusterSize;
    const startCluster = Math.floor(offset / cs);
    const lastCluster = Math.floor((offset + length - 1) / cs);
    const max =
      this.layout.refcountBits >= 53 ? Number.MAX_SAFE_INTEGER : Number(this.layout.refcountMax);
    let loadedTable = -1;
    let block: Uint8Array | undefined;
    let blockOffset = 0;
    for (let c = startCluster; c <= lastCluster; c++) {
      const { tableIndex, index } = this.#blockIndexOf(c);
      if (tableIndex !== loadedTable) {
        if (block) this.cache.markDirty(blockOffset);
        try {
          ({ block, offset: blockOffset } = await this.#refblockFor(c));
        } catch (err) {
          if (err instanceof RetryAllocation && delta > 0) {
            // Undo what we did so far, restart the caller's search from our start.
            if (c > startCluster) await this.update(offset, (c - startCluster) * cs, -delta);
            if (this.freeClusterIndex > startCluster) this.freeClusterIndex = startCluster;
          }
          throw err;
        }
        loadedTable = tableIndex;
      }
      const order = this.layout.refcountOrder;
      const old = getRefcount(block!, index, order);
      const now = old + delta;
      if (now < 0 || now > max) {
        throw new CorruptImageError(
          `Refcount ${delta < 0 ? 'underflow' : 'overflow'} for cluster ${c} (refcount ${old}, change ${delta})`,
          { code: 'VMF_QCOW2_REFCOUNT' },
        );
      }
      setRefcount(block!, index, order, now);
      if (now === 0) {
        if (c < this.freeClusterIndex) this.freeClusterIndex = c;
        // A freed metadata table must never be written back over reused space.
        this.cache.discard(c * cs);
        this.onClusterZero?.(c * cs);
      }
    }
    if (block) this.cache.markDirty(blockOffset);
  }

  /** Queue a decrement; applied by applyPendingFrees() once the references are gone on disk. */
  free(offset: number, length: number, discard = true): void {
    if (length > 0) this.#pendingFrees.push({ offset, length, discard });
  }

  get hasPendingFrees(): boolean {
    return this.#pendingFrees.length > 0;
  }

  get pendingFreeCount(): number {
    return this.#pendingFrees.length;
  }

  async applyPendingFrees(): Promise<void> {
    const frees = this.#pendingFrees;
    this.#pendingFrees = [];
    const cs = this.layout.clusterSize;
    for (const f of frees) {
      await this.update(f.offset, f.length, -1);
      if (f.discard && this.onClusterFreed) {
        // Punch clusters that reached refcount 0 (QEMU update_refcount_discard).
        const first = Math.floor(f.offset / cs);
        const last = Math.floor((f.offset + f.length - 1) / cs);
        for (let c = first; c <= last; c++) {
          if ((await this.get(c)) === 0) await this.onClusterFreed(c * cs, cs);
        }
      }
    }
    await this.cache.flush();
  }

  /** The refcount block covering `clusterIndex`, allocating one (and growing the table) if needed. */
  async #refblockFor(clusterIndex: number): Promise<{ block: Uint8Array; offset: number }> {
    const { tableIndex } = this.#blockIndexOf(clusterIndex);
    if (tableIndex < this.table.length) {
      const off = this.#refblockOffset(tableIndex);
      if (off !== 0) return { block: await this.cache.get(off), offset: off };
    }
    await this.#allocRefblock(clusterIndex);
    throw new RetryAllocation();
  }

  /** QEMU alloc_refcount_block(): always ends with a retry of the caller's allocation. */
  async #allocRefblock(clusterIndex: number): Promise<void> {
    const cs = this.layout.clusterSize;
    const entries = this.layout.refblockEntries;
    const { tableIndex } = this.#blockIndexOf(clusterIndex);
    // The reftable will change: pending L2 updates must not overtake it.
    await this.flushL2();
    const newBlock = await this.#findFree(1);
    if (newBlock === 0) {
      throw new CorruptImageError('Preventing invalid allocation of refcount block at offset 0');
    }
    const newIndex = newBlock / cs;
    if (Math.floor(newIndex / entries) === tableIndex) {
      // The new block describes itself.
      const block = await this.cache.getEmpty(newBlock);
      setRefcount(block, newIndex % entries, this.layout.refcountOrder, 1);
    } else {
      // Described by another block; this recurses at most twice.
      for (;;) {
        try {
          await this.update(newBlock, cs, 1);
          break;
        } catch (err) {
          if (!(err instanceof RetryAllocation)) throw err;
        }
      }
      await this.cache.flush();
      await this.cache.getEmpty(newBlock);
    }
    await this.cache.flush();

    if (tableIndex < this.table.length) {
      const entry = new Uint8Array(8);
      new DataView(entry.buffer).setBigUint64(0, BigInt(newBlock));
      await this.storage.write(entry, this.tableOffset + tableIndex * 8);
      this.table[tableIndex] = newBlock;
      this.#refblockSet = undefined;
      return;
    }

    // Grow the reftable: new self-describing refblocks and table at the end (qcow2_refcount_area).
    const blocksUsed = Math.ceil(Math.max(clusterIndex + 1, newIndex + 1) / entries);
    const metaOffset = blocksUsed * entries * cs;
    await this.refcountArea(metaOffset, 0, false, tableIndex, newBlock);
  }

  /**
   * Create refcount structures covering everything up to `startOffset` + `additionalClusters`,
   * placing new refblocks and the new table at `startOffset` (QEMU qcow2_refcount_area).
   * Returns the end offset of the new structures.
   */
  async refcountArea(
    startOffset: number,
    additionalClusters: number,
    exactSize: boolean,
    newRefblockIndex: number,
    newRefblockOffset: number,
  ): Promise<number> {
    const cs = this.layout.clusterSize;
    const entries = this.layout.refblockEntries;
    const { blocks: totalBlocks } = refcountMetadataSize(
      startOffset / cs + additionalClusters,
      cs,
      this.layout.refcountOrder,
      !exactSize,
    );
    if (totalBlocks > MAX_REFTABLE_SIZE_BYTES)
      throw new CorruptImageError('Refcount table too large (File too large)');
    const areaIndex = Math.floor(startOffset / cs / entries);
    let tableSize = exactSize ? totalBlocks : totalBlocks + Math.ceil(totalBlocks / 2);
    tableSize = Math.ceil(tableSize / (cs / 8)) * (cs / 8);
    const tableClusters = (tableSize * 8) / cs;
    if (tableSize * 8 > MAX_REFTABLE_SIZE_BYTES)
      throw new CorruptImageError('Refcount table too large (File too large)');

    const newTable = new Array<number>(tableSize).fill(0);
    for (let i = 0; i < Math.min(this.table.length, tableSize); i++) newTable[i] = this.table[i]!;
    if (newRefblockOffset) newTable[newRefblockIndex] = newRefblockOffset;

    let additional = 0;
    for (let i = areaIndex; i < totalBlocks; i++) if (!newTable[i]) additional++;
    const tableOffset = startOffset + additional * cs;
    const endOffset = tableOffset + tableClusters * cs;

    let blockOffset = startOffset;
    for (let i = areaIndex; i < totalBlocks; i++) {
      let block: Uint8Array;
      let off: number;
      if (newTable[i]) {
        off = newTable[i]!;
        block = await this.cache.get(off);
      } else {
        off = blockOffset;
        block = await this.cache.getEmpty(off);
        newTable[i] = off;
        blockOffset += cs;
      }
      const firstCovered = i * entries * cs;
      if (firstCovered < endOffset) {
        let j = firstCovered < startOffset ? (startOffset - firstCovered) / cs : 0;
        const end = Math.min((endOffset - firstCovered) / cs, entries);
        for (; j < end; j++) setRefcount(block, j, this.layout.refcountOrder, 1);
        this.cache.markDirty(off);
      }
    }
    await this.cache.flush();

    const buf = new Uint8Array(tableSize * 8);
    const view = new DataView(buf.buffer);
    for (let i = 0; i < totalBlocks; i++) view.setBigUint64(i * 8, BigInt(newTable[i]!));
    await this.storage.write(buf, tableOffset);
    await this.writeHeaderReftable(tableOffset, tableClusters);

    const oldOffset = this.tableOffset;
    const oldBytes = this.table.length * 8;
    this.table = newTable;
    this.#refblockSet = undefined;
    this.tableOffset = tableOffset;
    if (oldBytes > 0) await this.update(oldOffset, oldBytes, -1);
    return endOffset;
  }

  /** Replace the whole refcount structure (after the image was emptied or rebuilt). */
  reset(tableOffset: number, table: number[]): void {
    this.table = table;
    this.tableOffset = tableOffset;
    this.#refblockSet = undefined;
    this.freeClusterIndex = 0;
    this.#pendingFrees = [];
    this.#freeByteOffset = 0;
    this.cache.clear();
  }

  /** Partly used cluster for compressed data (QEMU's free_byte_offset); 0 = none. */
  #freeByteOffset = 0;

  /**
   * Allocate `size` bytes (<= one cluster) for compressed data, packing successive allocations
   * into the same host cluster as QEMU's qcow2_alloc_bytes() does. Every host cluster the range
   * touches gets one reference.
   */
  async allocBytes(size: number): Promise<number> {
    const cs = this.layout.clusterSize;
    let offset = this.#freeByteOffset;
    if (offset && (await this.get(Math.floor(offset / cs))) >= Number(this.layout.refcountMax))
      offset = 0;
    let freeInCluster = cs - (offset % cs);
    for (;;) {
      if (!offset || freeInCluster < size) {
        const newCluster = await this.#findFree(1);
        if (newCluster === 0) {
          throw new CorruptImageError(
            'Preventing invalid allocation of compressed cluster at offset 0',
          );
        }
        if (!offset || Math.ceil(offset / cs) * cs !== newCluster) {
          offset = newCluster;
          freeInCluster = cs;
        } else {
          freeInCluster += cs;
        }
      }
      try {
        await this.update(offset, size, 1);
        break;
      } catch (err) {
        if (!(err instanceof RetryAllocation)) throw err;
        offset = 0;
      }
    }
    this.#freeByteOffset = (offset + size) % cs === 0 ? 0 : offset + size;
    return offset;
  }

  /**
   * Install a new refcount table that is already on disk and in the header (after `check -r all`
   * rebuilt the refcount structures). Cached refcount blocks must have been dropped by the caller.
   */
  replaceTable(table: number[], tableOffset: number): void {
    this.table = table;
    this.tableOffset = tableOffset;
    this.#refblockSet = undefined;
  }

  /** Is `offset` the start of a cached or referenced refcount block? (overlap checks) */
  isRefblock(clusterOffset: number): boolean {
    if (clusterOffset === 0) return false;
    return this.refblockOffsets().has(clusterOffset);
  }

  /** Host offsets of the refcount blocks (a live set: do not change it). */
  refblockOffsets(): ReadonlySet<number> {
    if (!this.#refblockSet) this.#refblockSet = new Set(this.table.filter((o) => o !== 0));
    return this.#refblockSet;
  }
}
