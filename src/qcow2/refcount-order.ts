// Changing the refcount width of an image (qemu-img amend -o refcount_bits=N), as QEMU 7.2's
// qcow2_change_refcount_order() in qcow2-refcount.c: walk the old refcount structures until
// the new refblocks and reftable are allocated (their own allocation may need more), write the
// new refblocks and reftable into those fresh clusters, switch the header to them, then free
// the old structures through the new ones.
//
// Crash safety: until the header switch the old structures are authoritative and describe the
// new clusters as allocated (a crash leaks them); the new structures are complete on disk
// before the switch; the old ones are freed only after it (a crash leaks them).
//
// Runs on a closed image: the caller flushes and closes the device, and reopens it afterwards.

import type { Storage } from '../block/storage.js';
import { InvalidArgumentError, NotSupportedError } from '../core/index.js';
import { MAX_REFTABLE_SIZE_BYTES } from './constants.js';
import { encodeHeader, type Qcow2Header } from './header.js';
import { makeLayout } from './layout.js';
import { getRefcount, Refcounts, setRefcount } from './refcount.js';

const CACHE_BYTES = 4 * 1024 * 1024;

/** `%#` PRIx64: "0" for zero, "0x..." otherwise. */
function hashHex(v: number): string {
  return v === 0 ? '0' : `0x${v.toString(16)}`;
}

function readTable(bytes: Uint8Array): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: number[] = [];
  for (let i = 0; i < bytes.length / 8; i++) {
    out.push(Number(view.getBigUint64(i * 8) & 0xffff_ffff_ffff_fe00n));
  }
  return out;
}

/** Refcount structures of an image whose header is `header`, read from `storage`. */
export async function openRefcounts(storage: Storage, header: Qcow2Header): Promise<Refcounts> {
  const layout = makeLayout(
    header.clusterBits,
    header.refcountOrder,
    (header.incompatibleFeatures & (1n << 4n)) !== 0n,
  );
  const bytes = new Uint8Array(header.refcountTableClusters * layout.clusterSize);
  await storage.read(bytes, header.refcountTableOffset);
  return new Refcounts(
    storage,
    layout,
    readTable(bytes),
    header.refcountTableOffset,
    CACHE_BYTES,
    async (offset, clusters) => {
      const b = new Uint8Array(12);
      const v = new DataView(b.buffer);
      v.setBigUint64(0, BigInt(offset));
      v.setUint32(8, clusters);
      await storage.write(b, 48);
      header.refcountTableOffset = offset;
      header.refcountTableClusters = clusters;
    },
  );
}

/**
 * qcow2_change_refcount_order(). `onStatus(offset, total)` receives QEMU's walk progress
 * (per reftable entry, `walkIndex`/`totalWalks` scaled). `header` is updated in place and
 * written to cluster 0.
 */
export async function changeRefcountOrder(
  storage: Storage,
  header: Qcow2Header,
  refcountOrder: number,
  onStatus: (offset: number, total: number) => void = () => {},
): Promise<void> {
  const old = await openRefcounts(storage, header);
  const cs = old.layout.clusterSize;
  const oldPer = old.layout.refblockEntries;
  const newBits = 2 ** refcountOrder;
  const newPer = (cs * 8) / newBits;
  const newBlock = new Uint8Array(cs);

  const newTable: number[] = [];
  let newTableOffset = 0;
  let allocatedTableSize = 0;
  let walkIndex = 0;

  type Op = (index: number, empty: boolean) => Promise<boolean>;

  /** walk_over_reftable(): one pass over every old refcount, completing new blocks as it goes. */
  const walk = async (op: Op, fill: boolean, index: number, total: number): Promise<boolean> => {
    let allocated = false;
    let newIndex = 0;
    let entry = 0;
    let empty = true;
    const finish = async () => {
      if (await op(newIndex, empty)) allocated = true;
      newIndex++;
      entry = 0;
      empty = true;
      if (fill) newBlock.fill(0);
    };
    // The old table may grow while we allocate: its length is read on every step.
    for (let ti = 0; ti < old.table.length; ti++) {
      onStatus(index * old.table.length + ti, total * old.table.length);
      const blockOffset = old.table[ti]!;
      if (blockOffset % cs !== 0) {
        throw new NotSupportedError('Image is corrupt (unaligned refblock offset)', {
          details: { errno: 'EIO' },
        });
      }
      const block = blockOffset ? await old.cache.get(blockOffset) : undefined;
      // Runs of entries that stay within one new block; a missing old block is all zeros,
      // which the (zero-initialised) new block already holds.
      for (let bi = 0; bi < oldPer;) {
        if (entry >= newPer) await finish();
        const span = Math.min(oldPer - bi, newPer - entry);
        if (block) {
          for (let k = 0; k < span; k++) {
            const refcount = getRefcount(block, bi + k, old.layout.refcountOrder);
            if (refcount === 0) continue;
            if (newBits < 64 && refcount >= 2 ** newBits) {
              const offset = (ti * oldPer + bi + k) * cs;
              throw new InvalidArgumentError(
                `Cannot decrease refcount entry width to ${newBits} bits: Cluster at offset ${hashHex(offset)} has a refcount of ${refcount}`,
                { details: { errno: 'EINVAL' } },
              );
            }
            if (fill) setRefcount(newBlock, entry + k, refcountOrder, refcount);
            empty = false;
          }
        }
        entry += span;
        bi += span;
      }
    }
    if (entry > 0) await finish();
    onStatus((index + 1) * old.table.length, total * old.table.length);
    return allocated;
  };

  // alloc_refblock: a cluster for every new block that counts something.
  const allocBlock: Op = async (index, empty) => {
    if (empty) return false;
    if (index >= newTable.length) {
      const size = Math.ceil((index + 1) / (cs / 8)) * (cs / 8);
      if (size > MAX_REFTABLE_SIZE_BYTES / 8) {
        throw new NotSupportedError(
          'This operation would make the refcount table grow beyond the maximum size supported by QEMU, aborting',
          { details: { errno: 'ENOTSUP' } },
        );
      }
      while (newTable.length < size) newTable.push(0);
    }
    if (newTable[index]) return false;
    newTable[index] = await old.allocClusters(1);
    return true;
  };

  // flush_refblock: write each completed block where the new table says.
  const flushBlock: Op = async (index, empty) => {
    const offset = newTable[index] ?? 0;
    if (offset) await storage.write(newBlock, offset);
    else if (!empty) throw new Error('internal error: unallocated non-empty refcount block');
    return false;
  };

  try {
    for (;;) {
      const totalWalks = Math.max(walkIndex + 2, 3);
      const allocated = await walk(allocBlock, false, walkIndex++, totalWalks);
      if (!allocated) break;
      if (newTableOffset) await old.update(newTableOffset, allocatedTableSize * 8, -1);
      newTableOffset = await old.allocClusters(Math.ceil((newTable.length * 8) / cs));
      allocatedTableSize = newTable.length;
    }
    await walk(flushBlock, true, walkIndex, walkIndex + 1);

    const tableBytes = new Uint8Array(newTable.length * 8);
    const view = new DataView(tableBytes.buffer);
    newTable.forEach((o, i) => view.setBigUint64(i * 8, BigInt(o)));
    await storage.write(tableBytes, newTableOffset);
    await old.cache.flush();
    await storage.flush();
  } catch (err) {
    // Release what this run allocated, through the structures that describe it.
    for (const off of newTable) if (off) await old.update(off, cs, -1).catch(() => undefined);
    if (newTableOffset)
      await old.update(newTableOffset, allocatedTableSize * 8, -1).catch(() => undefined);
    await old.cache.flush().catch(() => undefined);
    throw err;
  }

  // Switch (qcow2_update_header), then free the old structures through the new ones.
  const oldTable = [...old.table];
  const oldTableOffset = old.tableOffset;
  header.refcountOrder = refcountOrder;
  header.refcountTableOffset = newTableOffset;
  header.refcountTableClusters = Math.ceil((newTable.length * 8) / cs);
  await storage.write(encodeHeader(header), 0);
  await storage.flush();

  const fresh = await openRefcounts(storage, header);
  for (const off of oldTable) if (off) await fresh.update(off, cs, -1);
  await fresh.update(oldTableOffset, oldTable.length * 8, -1);
  await fresh.cache.flush();
  await storage.flush();
}
