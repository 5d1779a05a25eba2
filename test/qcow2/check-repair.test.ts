// qcow2 check -r leaks / -r all: what is repaired, the exact lines QEMU prints while repairing
// (copied from QEMU 7.2's qemu-iotests reference outputs), the re-check, and that the repaired
// image is clean and keeps its data.

import { describe, expect, it } from 'vitest';
import { checkQcow2 } from '../../src/qcow2/check/index.js';
import { openQcow2 } from '../../src/qcow2/open.js';
import type { MemoryStorage } from '../../src/block/memory-storage.js';
import {
  check,
  DATA,
  entry,
  FILENAME,
  L1,
  L2,
  newImage,
  openForCheck,
  poke,
  RB,
  readHeaderU64,
  RT,
  u16,
  u64,
  withData,
} from './check-helpers.js';

async function guestBytes(
  storage: MemoryStorage,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  const dev = await openQcow2(storage, { filename: FILENAME, readOnly: true });
  const buf = new Uint8Array(length);
  await dev.read(buf, offset);
  await dev.close();
  return buf;
}

describe('check -r leaks', () => {
  it('fixes a leak, then re-checks clean', async () => {
    const storage = await withData();
    await storage.truncate(11 * 0x10000);
    await poke(storage, RB + 2 * 10, u16(1));
    const out = await check(storage, 'leaks');
    // The first comparison reports, the second (with the fix mode) repairs.
    expect(out.lines).toEqual([
      'Leaked cluster 10 refcount=1 reference=0',
      'Repairing cluster 10 refcount=1 reference=0',
    ]);
    expect(out.repaired).toEqual({ leaksFixed: 1, corruptionsFixed: 0 });
    expect(out.result).toMatchObject({ 'leaks-fixed': 1, 'check-errors': 0 });
    expect(out.result?.leaks).toBeUndefined();
    expect(out.exitCode).toBe(0);
    expect((await check(storage)).lines).toEqual([]);
  });

  it('does not fix corruptions, and cannot rebuild', async () => {
    const storage = await withData();
    await poke(storage, RB + 2 * 5, u16(0));
    const out = await check(storage, 'leaks');
    expect(out.lines).toEqual([
      'ERROR cluster 5 refcount=0 reference=1',
      'ERROR need to rebuild refcount structures',
      'qemu-img: Check failed: Input/output error',
    ]);
    expect(out.exitCode).toBe(1);
  });

  it('repairs COPIED flags only when nothing else is wrong', async () => {
    const storage = await withData();
    await poke(storage, L2, entry(DATA, false));
    const out = await check(storage, 'leaks');
    expect(out.lines).toEqual(['Repairing OFLAG_COPIED data cluster: l2_entry=50000 refcount=1']);
    expect(out.repaired).toEqual({ leaksFixed: 0, corruptionsFixed: 1 });
    expect(await readHeaderU64(storage, L2)).toBe(0x8000_0000_0005_0000n);
  });
});

describe('check -r all', () => {
  it('060: empty refcount table: rebuilds the refcount structure', async () => {
    const storage = await newImage();
    await poke(storage, RT, u64(0));
    const out = await check(storage, 'all');
    expect(out.lines).toEqual([
      'ERROR cluster 0 refcount=0 reference=1',
      'ERROR cluster 1 refcount=0 reference=1',
      'ERROR cluster 3 refcount=0 reference=1',
      'Rebuilding refcount structure',
      'Repairing cluster 1 refcount=1 reference=0',
    ]);
    expect(out.repaired).toEqual({ leaksFixed: 0, corruptionsFixed: 3 });
    expect(out.exitCode).toBe(0);
    expect((await check(storage)).lines).toEqual([]);
  });

  it('108: no refcount table at all: rebuilt, and the data survives', async () => {
    const storage = await newImage({}, (dev) => dev.write(new Uint8Array(65536).fill(42), 0));
    await poke(storage, 0x30, u64(0));
    await poke(storage, 0x38, new Uint8Array(4));
    const out = await check(storage, 'all');
    expect(out.lines).toEqual([
      'ERROR cluster 0 refcount=0 reference=1',
      'ERROR cluster 3 refcount=0 reference=1',
      'ERROR cluster 4 refcount=0 reference=1',
      'ERROR cluster 5 refcount=0 reference=1',
      'Rebuilding refcount structure',
    ]);
    expect(out.repaired).toEqual({ leaksFixed: 0, corruptionsFixed: 4 });
    expect(await guestBytes(storage, 0, 65536)).toEqual(new Uint8Array(65536).fill(42));
  });

  it('060: cluster data reference into the refcount block', async () => {
    const storage = await newImage();
    await storage.truncate(L2 + 0x10000);
    await poke(storage, L1, entry(L2));
    await poke(storage, RB + 8, u16(1));
    await poke(storage, L2, entry(RB));
    const out = await check(storage, 'all');
    expect(out.lines).toEqual([
      'ERROR refcount block 0 refcount=2',
      'ERROR cluster 2 refcount=1 reference=2',
      'Rebuilding refcount structure',
      'Repairing cluster 1 refcount=1 reference=0',
      'Repairing cluster 2 refcount=2 reference=1',
    ]);
    expect(out.repaired).toEqual({ leaksFixed: 0, corruptionsFixed: 2 });
    expect((await check(storage)).exitCode).toBe(0);
  });

  it('060: unaligned preallocated zero cluster becomes a plain zero cluster', async () => {
    const storage = await withData();
    await poke(storage, L2, u64(0x8000_0000_0000_2a01n));
    const out = await check(storage, 'all');
    expect(out.lines).toEqual([
      'Repairing offset=2a00: Preallocated cluster is not properly aligned; L2 entry corrupted.',
      'Leaked cluster 5 refcount=1 reference=0',
      'Repairing cluster 5 refcount=1 reference=0',
    ]);
    expect(await readHeaderU64(storage, L2)).toBe(1n);
    expect((await check(storage)).exitCode).toBe(0);
  });

  it('a refcount too low is raised, then COPIED is corrected', async () => {
    const storage = await withData();
    await poke(storage, L2 + 8, entry(DATA));
    const out = await check(storage, 'all');
    expect(out.lines).toEqual([
      'ERROR cluster 5 refcount=1 reference=2',
      'Repairing cluster 5 refcount=1 reference=2',
      'Repairing OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=2',
      'Repairing OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=2',
    ]);
    expect(out.repaired).toEqual({ leaksFixed: 0, corruptionsFixed: 3 });
    expect((await check(storage)).exitCode).toBe(0);
  });

  it('108: grows the file over a refblock beyond its end', async () => {
    const storage = await newImage();
    await poke(storage, RT + 8, u64(0x100000));
    await poke(storage, RB + 32, u16(1));
    const out = await check(storage, 'all');
    expect(out.lines).toEqual(['Repairing refcount block 1 is outside image']);
    expect(await storage.size()).toBe(0x110000);
    expect((await check(storage)).exitCode).toBe(0);
  });

  it('108: a refblock offset that cannot be reached is rebuilt around', async () => {
    const storage = await newImage();
    await poke(storage, RT + 8, u64(0x7fff_ffff_ffff_0000n));
    const out = await check(storage, 'all');
    expect(out.lines).toEqual([
      'Repairing refcount block 1 is outside image',
      'ERROR could not resize image: Invalid argument',
      'Rebuilding refcount structure',
      'Repairing cluster 1 refcount=1 reference=0',
      'Repairing cluster 2 refcount=1 reference=0',
    ]);
    expect((await check(storage)).exitCode).toBe(0);
  });

  it('a fatal corruption marks the image corrupt and makes the device unusable', async () => {
    const storage = await withData();
    await poke(storage, RT, u64(0x2a00));
    const dev = await openForCheck(storage, true);
    const first = await checkQcow2(dev, { repair: 'all' });
    expect(first.messages[1]?.text).toBe(
      'qcow2: Marking image as corrupt: Refblock offset 0x2a00 unaligned (reftable index: 0); further corruption events will be suppressed',
    );
    expect((await readHeaderU64(storage, 72)) & 2n).toBe(2n);
    // QEMU drops the node (bs->drv = NULL): the double check fails with ENOMEDIUM.
    const second = await checkQcow2(dev);
    expect(second.failure).toEqual({ errno: 'ENOMEDIUM', message: 'No medium found' });
    await dev.close();
    // A second repair then finishes the job, and clears the corrupt bit.
    const again = await check(storage, 'all');
    expect(again.lines).toEqual([
      'Leaked cluster 1 refcount=1 reference=0',
      'Repairing cluster 1 refcount=1 reference=0',
    ]);
    expect(again.exitCode).toBe(0);
    expect((await readHeaderU64(storage, 72)) & 2n).toBe(0n);
  });

  it('clears the corrupt bit of a consistent image', async () => {
    const storage = await withData();
    await poke(storage, 72, u64(2));
    const out = await check(storage, 'all');
    expect(out.lines).toEqual([]);
    expect(await readHeaderU64(storage, 72)).toBe(0n);
  });
});
