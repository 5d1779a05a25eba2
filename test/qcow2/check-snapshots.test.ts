// The snapshot table in a check (qcow2_check_read_snapshot_table / qcow2_check_fix_snapshot_table):
// v3 entries without the required extra data, oversized extra data, and the rewrite -r all does.

import { describe, expect, it } from 'vitest';
import type { MemoryStorage } from '../../src/block/memory-storage.js';
import { openQcow2 } from '../../src/qcow2/open.js';
import { check, FILENAME, newImage, poke, RB, u16, u64 } from './check-helpers.js';

const TABLE = 0x40000; // the first free cluster of a fresh 64 MiB image

/** A snapshot table entry with no L1 table, id "1", name "sn0" and `extra` bytes of extra data. */
function snapshotEntry(extraDataSize: number, extraBytesPresent = extraDataSize): Uint8Array {
  const id = new TextEncoder().encode('1');
  const name = new TextEncoder().encode('sn0');
  const buf = new Uint8Array(40 + extraBytesPresent + id.length + name.length);
  const v = new DataView(buf.buffer);
  v.setUint16(12, id.length);
  v.setUint16(14, name.length);
  v.setUint32(16, 1_700_000_000);
  v.setUint32(36, extraDataSize);
  buf.set(id, 40 + extraBytesPresent);
  buf.set(name, 40 + extraBytesPresent + id.length);
  return buf;
}

async function imageWithSnapshotTable(table: Uint8Array, clusters = 1): Promise<MemoryStorage> {
  const storage = await newImage();
  await storage.truncate(TABLE + clusters * 0x10000);
  await poke(storage, TABLE, table);
  for (let c = 0; c < clusters; c++) await poke(storage, RB + 2 * (TABLE / 0x10000 + c), u16(1));
  await poke(storage, 60, new Uint8Array([0, 0, 0, 1]));
  await poke(storage, 64, u64(TABLE));
  return storage;
}

describe('check: snapshot table', () => {
  it('261: a v3 entry without 16 bytes of extra data is incomplete, and -r all completes it', async () => {
    const storage = await imageWithSnapshotTable(snapshotEntry(0));
    const ro = await check(storage);
    expect(ro.lines).toEqual(['ERROR snapshot table entry 0 is incomplete']);
    expect(ro.exitCode).toBe(2);

    const out = await check(storage, 'all');
    expect(out.lines).toEqual(['Repairing snapshot table entry 0 is incomplete']);
    expect(out.repaired).toEqual({ leaksFixed: 0, corruptionsFixed: 1 });
    expect(out.exitCode).toBe(0);
    expect((await check(storage)).lines).toEqual([]);

    // The rewritten table keeps the snapshot, now with the 24 bytes QEMU always writes.
    const dev = await openQcow2(storage, { filename: FILENAME, readOnly: true });
    expect(dev.snapshots.map((s) => [s.id, s.name, s.extraDataSize])).toEqual([['1', 'sn0', 24]]);
    await dev.close();
  });

  it('261: too much extra data fails the check, and -r all cuts it to 1 KiB', async () => {
    const storage = await imageWithSnapshotTable(snapshotEntry(0x10000, 24), 2);
    const ro = await check(storage);
    expect(ro.lines).toEqual([
      'qemu-img: ERROR failed to read the snapshot table: Too much extra metadata in snapshot table entry 0',
      'You can force-remove this extra metadata with qemu-img check -r all',
      'qemu-img: Check failed: File too large',
    ]);
    expect(ro.exitCode).toBe(1);

    const out = await check(storage, 'all');
    expect(out.lines[0]).toBe(
      'Discarding too much extra metadata in snapshot table entry 0 (65536 > 1024)',
    );
    expect(out.exitCode).toBe(0);
    const dev = await openQcow2(storage, { filename: FILENAME, readOnly: true });
    expect(dev.snapshots[0]?.extraDataSize).toBe(1024);
    await dev.close();
  });

  it('a snapshot whose L1 table is not cluster aligned', async () => {
    const entry = snapshotEntry(24);
    new DataView(entry.buffer).setBigUint64(0, 0x400200n);
    new DataView(entry.buffer).setUint32(8, 1);
    const out = await check(await imageWithSnapshotTable(entry));
    expect(out.lines).toEqual([
      'ERROR snapshot 1 (sn0) l1_offset=0x400200: L1 table is not cluster aligned; snapshot table entry corrupted',
    ]);
  });
});
