// Internal snapshots, resizing and refcount width changes on in-memory images: guest content
// of the image and of each snapshot, and a full reference count audit (every cluster's refcount
// equals the references the header, tables and snapshots make to it; COPIED exactly where the
// refcount is 1) after every operation.
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/block/memory-storage.js';
import { createQcow2 } from '../../src/qcow2/create.js';
import { openQcow2 } from '../../src/qcow2/open.js';
import type { Qcow2Device } from '../../src/qcow2/qcow2-device.js';
import {
  clusterType,
  compressedLocation,
  entryOffset,
  isCopied,
  readL2Entry,
} from '../../src/qcow2/l2-entry.js';
import { decodeL1, newSnapshotId, snapshotTableSize } from '../../src/qcow2/snapshots.js';
import { changeRefcountOrder } from '../../src/qcow2/refcount-order.js';
import type { Qcow2Snapshot } from '../../src/qcow2/snapshot-table.js';

const MiB = 1024 * 1024;

async function makeImage(
  options: { clusterSize?: number; refcountBits?: number; version?: 2 | 3 } = {},
) {
  const storage = new MemoryStorage();
  const dev = await createQcow2(storage, { size: 8 * MiB, ...options }, { filename: 'mem.qcow2' });
  return { storage, dev };
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Byte equality without vitest's (slow, element-wise) deep comparison of megabytes. */
function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(
    Buffer.from(b.buffer, b.byteOffset, b.length),
  );
}

async function readAll(dev: Qcow2Device): Promise<Uint8Array> {
  const b = new Uint8Array(dev.size);
  await dev.read(b, 0);
  return b;
}

/** Every cluster's expected refcount from the metadata, compared with the refcount table. */
async function audit(dev: Qcow2Device): Promise<string[]> {
  await dev.flush();
  const cs = dev.layout.clusterSize;
  const refs = new Map<number, number>();
  const add = (off: number, len = cs) => {
    for (let c = Math.floor(off / cs); c * cs < off + len; c++) refs.set(c, (refs.get(c) ?? 0) + 1);
  };
  const h = dev.header;
  add(0);
  add(h.refcountTableOffset, h.refcountTableClusters * cs);
  for (const b of dev.refcounts.table) if (b) add(b);
  add(h.l1TableOffset, h.l1Size * 8);
  if (h.nbSnapshots) add(h.snapshotsOffset, snapshotTableSize(dev.snapshots, true));
  const problems: string[] = [];
  const walk = async (l1: Uint32Array, entries: number, active: boolean) => {
    for (let i = 0; i < entries; i++) {
      const e = { hi: l1[2 * i]!, lo: l1[2 * i + 1]! };
      const l2 = entryOffset(e);
      if (!l2) continue;
      add(l2);
      const table = await dev.readL2Table(l2);
      for (let j = 0; j < dev.layout.l2Entries; j++) {
        const entry = readL2Entry(table, j, dev.layout);
        const type = clusterType(entry, dev.layout, false);
        if (type === 'compressed') {
          const { offset, size } = compressedLocation(entry, dev.layout);
          add(offset, size);
        } else if (type === 'normal' || type === 'zero-alloc') add(entryOffset(entry));
      }
    }
    void active;
  };
  await walk(dev.l1Raw(), dev.l1Size, true);
  for (const sn of dev.snapshots) {
    add(sn.l1TableOffset, sn.l1Size * 8);
    const bytes = new Uint8Array(sn.l1Size * 8);
    await dev.storage.read(bytes, sn.l1TableOffset);
    await walk(decodeL1(bytes), sn.l1Size, false);
  }
  const fileClusters = Math.ceil((await dev.storage.size()) / cs);
  const last = Math.max(fileClusters, ...refs.keys());
  for (let c = 0; c <= last; c++) {
    const want = refs.get(c) ?? 0;
    const have = await dev.refcounts.get(c);
    if (want !== have) problems.push(`cluster ${c}: refcount ${have}, references ${want}`);
  }
  // COPIED exactly where the refcount is 1 (active L1 and its L2 tables).
  for (let i = 0; i < dev.l1Size; i++) {
    const e = dev.l1Entry(i);
    if (!e.offset) continue;
    const rc = await dev.refcounts.get(e.offset / cs);
    if (e.copied !== (rc === 1)) problems.push(`L1[${i}] COPIED=${e.copied} refcount ${rc}`);
    const table = await dev.readL2Table(e.offset);
    for (let j = 0; j < dev.layout.l2Entries; j++) {
      const entry = readL2Entry(table, j, dev.layout);
      const type = clusterType(entry, dev.layout, false);
      if (type !== 'normal' && type !== 'zero-alloc') continue;
      const drc = await dev.refcounts.get(entryOffset(entry) / cs);
      if (isCopied(entry) !== (drc === 1))
        problems.push(`L2[${i}][${j}] COPIED=${isCopied(entry)} refcount ${drc}`);
    }
  }
  return problems;
}

const sn = (id: string): Qcow2Snapshot => ({
  l1TableOffset: 0,
  l1Size: 0,
  id,
  name: '',
  dateSec: 0,
  dateNsec: 0,
  vmClockNsec: 0n,
  vmStateSize: 0,
  diskSize: 0,
  icount: undefined,
  extraDataSize: 0,
  unknownExtraData: new Uint8Array(0),
});

describe('snapshot ids and table size', () => {
  it('finds the next id as find_new_snapshot_id does (strtoul)', () => {
    expect(newSnapshotId([])).toBe('1');
    expect(newSnapshotId([sn('1'), sn('7'), sn('3')])).toBe('8');
    expect(newSnapshotId([sn('abc'), sn(' 12x')])).toBe('13');
    expect(newSnapshotId([sn('-1')])).toBe('0'); // ULONG_MAX + 1 wraps
    expect(newSnapshotId([sn('99999999999999999999999')])).toBe('0');
  });

  it('counts the table as QEMU does: entries 8-aligned, extra data at least 24 bytes when written', () => {
    const a = { ...sn('1'), name: 'a', extraDataSize: 0 };
    const b = { ...sn('2'), name: 'bb', extraDataSize: 24 };
    expect(snapshotTableSize([a, b], true)).toBe(40 + 0 + 2 + 6 + 40 + 24 + 3);
    expect(snapshotTableSize([a, b], false)).toBe(40 + 24 + 2 + 6 + 40 + 24 + 3);
  });
});

describe('internal snapshots on an in-memory image', () => {
  it.each([
    { name: 'v3 64k', o: {} },
    { name: 'v2 4k clusters', o: { version: 2 as const, clusterSize: 4096 } },
    { name: '512 B clusters, refcount_bits=4', o: { clusterSize: 512, refcountBits: 4 } },
  ])('create, write, apply, delete keep content and refcounts exact: $name', async ({ o }) => {
    const { dev } = await makeImage(o);
    const a = pattern(3 * MiB, 1);
    await dev.write(a, 0);
    await dev.writeCompressed(pattern(dev.layout.clusterSize, 9), 5 * MiB);
    const before = await readAll(dev);
    const s1 = await dev.createSnapshot({ name: 'one', dateSec: 1, dateNsec: 2 });
    expect(s1).toMatchObject({
      id: '1',
      name: 'one',
      diskSize: 8 * MiB,
      icount: 0,
      vmClockNsec: 0n,
    });
    expect(await audit(dev)).toEqual([]);

    await dev.write(pattern(MiB, 2), MiB / 2);
    await dev.writeZeroes(2 * MiB, MiB);
    const middle = await readAll(dev);
    expect(same(middle, before)).toBe(false);
    await dev.createSnapshot({ name: 'two', dateSec: 3, dateNsec: 4 });
    await dev.discard(0, MiB);
    expect(await audit(dev)).toEqual([]);

    await dev.applySnapshot('one');
    expect(same(await readAll(dev), before)).toBe(true);
    expect(await audit(dev)).toEqual([]);
    await dev.applySnapshot('2');
    expect(same(await readAll(dev), middle)).toBe(true);

    await dev.deleteSnapshot(undefined, 'two');
    expect(dev.snapshots.map((s) => s.name)).toEqual(['one']);
    expect(same(await readAll(dev), middle)).toBe(true);
    expect(await audit(dev)).toEqual([]);
    await dev.deleteSnapshot('1', undefined);
    expect(dev.header.nbSnapshots).toBe(0);
    expect(await audit(dev)).toEqual([]);
    await expect(dev.deleteSnapshot('1', undefined)).rejects.toThrow("Can't find the snapshot");
    await expect(dev.applySnapshot('nope')).rejects.toThrow('No such file or directory');
    await dev.close();
  });

  it('reopens with the snapshot table it wrote', async () => {
    const { storage, dev } = await makeImage();
    await dev.write(pattern(MiB, 3), 0);
    await dev.createSnapshot({ name: 'x'.repeat(300), dateSec: 5, dateNsec: 6 });
    await dev.close();
    const again = await openQcow2(storage, { filename: 'mem.qcow2', readOnly: false });
    expect(again.snapshots).toHaveLength(1);
    expect(again.snapshots[0]!.name).toBe('x'.repeat(255)); // QEMUSnapshotInfo.name[256]
    expect(again.snapshots[0]!.dateSec).toBe(5);
    expect(await audit(again)).toEqual([]);
    await again.close();
  });
});

describe('truncate and refcount width on an in-memory image', () => {
  it('shrinks: data beyond the end is gone, refcounts exact, file cut', async () => {
    const { storage, dev } = await makeImage({ clusterSize: 4096 });
    await dev.write(pattern(8 * MiB, 4), 0);
    const head = (await readAll(dev)).slice(0, MiB);
    const sizeBefore = await storage.size();
    await dev.truncate(MiB, { allowShrink: true });
    expect(dev.size).toBe(MiB);
    expect(same(await readAll(dev), head)).toBe(true);
    expect(await audit(dev)).toEqual([]);
    expect(await storage.size()).toBeLessThan(sizeBefore / 4);
    await dev.truncate(3 * MiB);
    const grown = await readAll(dev);
    expect(same(grown.subarray(0, MiB), head)).toBe(true);
    expect(grown.subarray(MiB).every((b) => b === 0)).toBe(true);
    await expect(dev.truncate(MiB)).rejects.toThrow('allowShrink');
    await expect(dev.truncate(MiB + 1, { allowShrink: true })).rejects.toThrow('multiple of 512');
    await dev.close();
  });

  it.each([1, 2, 8, 32, 64])('changes the refcount width to %i bits and back', async (bits) => {
    const { storage, dev } = await makeImage({ clusterSize: 4096 });
    await dev.write(pattern(2 * MiB, 5), 0);
    await dev.createSnapshot({ name: 's', dateSec: 0, dateNsec: 0 });
    const content = await readAll(dev);
    await dev.flush();
    const header = dev.header;
    await dev.close();
    if (bits === 1) {
      await expect(changeRefcountOrder(storage, header, 0)).rejects.toThrow(
        /Cannot decrease refcount entry width to 1 bits: Cluster at offset 0x[0-9a-f]+ has a refcount of 2/,
      );
      return;
    }
    await changeRefcountOrder(storage, header, Math.log2(bits));
    let again = await openQcow2(storage, { filename: 'mem.qcow2', readOnly: false });
    expect(again.layout.refcountBits).toBe(bits);
    expect(same(await readAll(again), content)).toBe(true);
    expect(await audit(again)).toEqual([]);
    await again.close();
    await changeRefcountOrder(storage, again.header, 4);
    again = await openQcow2(storage, { filename: 'mem.qcow2', readOnly: true });
    expect(await audit(again)).toEqual([]);
    await again.close();
  });
});
