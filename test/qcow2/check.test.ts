// qcow2 check without repair: counts, statistics and QEMU's exact diagnostics for the damage the
// qemu-iotests inflict (expected lines are copied from QEMU 7.2's iotest reference outputs).

import { describe, expect, it } from 'vitest';
import { checkImage } from '../../src/img/check.js';
import { RawDevice } from '../../src/raw/raw-device.js';
import { MemoryStorage } from '../../src/block/memory-storage.js';
import { checkQcow2 } from '../../src/qcow2/check/index.js';
import {
  check,
  DATA,
  entry,
  L1,
  L2,
  newImage,
  openForCheck,
  poke,
  RB,
  RT,
  u16,
  u64,
  withData,
} from './check-helpers.js';

describe('check: healthy images', () => {
  it('reports allocation statistics and the image end, with no diagnostics', async () => {
    const storage = await newImage({}, async (dev) => {
      // Guest 10 MiB gets host 0x50000, guest 0 gets 0x60000: walked in guest order, the
      // second data cluster does not follow the first, so it counts as fragmented.
      await dev.write(new Uint8Array(4096).fill(2), 10 << 20);
      await dev.write(new Uint8Array(65536).fill(1), 0);
    });
    const out = await check(storage);
    expect(out.lines).toEqual([]);
    expect(out.exitCode).toBe(0);
    expect(out.result).toEqual({
      filename: 'mem.qcow2',
      format: 'qcow2',
      'check-errors': 0,
      'image-end-offset': 0x70000,
      'total-clusters': 1024,
      'allocated-clusters': 2,
      'fragmented-clusters': 1,
    });
  });

  it('a fresh empty image: only the image end offset and total clusters', async () => {
    const out = await check(await newImage());
    expect(out.result).toEqual({
      filename: 'mem.qcow2',
      format: 'qcow2',
      'check-errors': 0,
      'image-end-offset': 0x40000,
      'total-clusters': 1024,
    });
  });

  it('never writes to the image without a repair mode', async () => {
    const storage = await withData();
    await poke(storage, RB + 2 * 10, u16(1)); // a leak
    await storage.truncate(11 * 0x10000);
    const before = new Uint8Array(await storage.size());
    await storage.read(before, 0);
    await check(storage);
    const after = new Uint8Array(await storage.size());
    await storage.read(after, 0);
    expect(after).toEqual(before);
  });
});

describe('check: diagnostics', () => {
  it('060: L2 reference into L1', async () => {
    const storage = await newImage();
    await poke(storage, L1, entry(L1));
    const out = await check(storage);
    expect(out.lines).toEqual(['ERROR cluster 3 refcount=1 reference=3']);
    expect(out.result?.corruptions).toBe(1);
    expect(out.exitCode).toBe(2);
  });

  it('060: cluster data reference into the refcount block', async () => {
    const storage = await newImage();
    await storage.truncate(L2 + 0x10000);
    await poke(storage, L1, entry(L2));
    await poke(storage, RB + 8, u16(1));
    await poke(storage, L2, entry(RB));
    const out = await check(storage);
    expect(out.lines).toEqual([
      'ERROR refcount block 0 refcount=2',
      'ERROR cluster 2 refcount=1 reference=2',
    ]);
    expect(out.exitCode).toBe(2);
  });

  it('a leaked cluster (exit 3)', async () => {
    const storage = await withData();
    await storage.truncate(11 * 0x10000);
    await poke(storage, RB + 2 * 10, u16(1));
    const out = await check(storage);
    expect(out.lines).toEqual(['Leaked cluster 10 refcount=1 reference=0']);
    expect(out.result?.leaks).toBe(1);
    expect(out.exitCode).toBe(3);
  });

  it('039: a used cluster with refcount 0 also breaks OFLAG_COPIED', async () => {
    const storage = await withData();
    await poke(storage, RB + 2 * 5, u16(0));
    const out = await check(storage);
    expect(out.lines).toEqual([
      'ERROR cluster 5 refcount=0 reference=1',
      'ERROR OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=0',
    ]);
    expect(out.result?.corruptions).toBe(2);
  });

  it('COPIED missing on an L1 entry', async () => {
    const storage = await withData();
    await poke(storage, L1, entry(L2, false));
    const out = await check(storage);
    expect(out.lines).toEqual([
      'ERROR OFLAG_COPIED L2 cluster: l1_index=0 l1_entry=40000 refcount=1',
    ]);
  });

  it('reserved bits in L1, L2 and refcount table entries', async () => {
    const storage = await withData();
    await poke(storage, L1, u64((1n << 63n) | (1n << 58n) | BigInt(L2)));
    await poke(storage, L2, u64((1n << 63n) | (1n << 57n) | BigInt(DATA)));
    await poke(storage, RT, u64(RB | 1));
    const out = await check(storage);
    expect(out.lines.slice(0, 3)).toEqual([
      'ERROR found L1 entry with reserved bits set: 8400000000040000',
      'ERROR found l2 entry with reserved bits set: 8200000000050000',
      'ERROR refcount table entry 0 has reserved bits set',
    ]);
  });

  it('060: unaligned L2 entry and unaligned preallocated zero cluster', async () => {
    const storage = await withData();
    await poke(storage, L2, u64(0x8000_0000_0005_2a00n));
    await poke(storage, L2 + 8, u64(0x8000_0000_0000_2a01n));
    const out = await check(storage);
    expect(out.lines).toContain(
      'ERROR offset=52a00: Data cluster is not properly aligned; L2 entry corrupted.',
    );
    expect(out.lines).toContain(
      'ERROR offset=2a00: Preallocated cluster is not properly aligned; L2 entry corrupted.',
    );
  });

  it('112: refcount_bits=1 overflows at the second reference', async () => {
    const storage = await withData({ refcountBits: 1 });
    await poke(storage, L2 + 8, entry(DATA));
    const out = await check(storage);
    expect(out.lines).toEqual([
      'ERROR: overflow cluster offset=0x50000',
      'Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing',
    ]);
  });

  it('a table beyond the end of the file', async () => {
    const storage = await withData();
    await poke(storage, L2 + 8, entry(2 ** 40));
    const out = await check(storage);
    expect(out.lines[0]).toBe(
      'ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x10000000000 size 0x10000',
    );
  });

  it('read-only: an unaligned refblock is reported once, then every cluster fails', async () => {
    const storage = await withData();
    await poke(storage, RT, u64(0x2a00));
    const out = await check(storage);
    expect(out.lines.slice(0, 3)).toEqual([
      'ERROR refcount block 0 is not cluster aligned; refcount table entry corrupted',
      'qcow2: Image is corrupt: Refblock offset 0x2a00 unaligned (reftable index: 0); further non-fatal corruption events will be suppressed',
      "Can't get refcount for cluster 0: Input/output error",
    ]);
    expect(out.exitCode).toBe(1);
    expect(out.error).toBe('Check failed');
  });

  it('080: invalid snapshot table pointers fail the check', async () => {
    const storage = await newImage();
    await poke(storage, 60, new Uint8Array([0xff, 0xff, 0xff, 0xff]));
    const out = await check(storage);
    expect(out.lines).toEqual([
      'qemu-img: ERROR snapshot table too large',
      'You can force-remove all 4294901759 overhanging snapshots with qemu-img check -r all',
      'qemu-img: Check failed: File too large',
    ]);
    expect(out.result).toBeUndefined();
    expect(out.exitCode).toBe(1);
  });
});

describe('checkImage', () => {
  it('63 for formats without a check', async () => {
    const raw = await RawDevice.open(new MemoryStorage(1 << 20), { filename: 'x.raw' });
    const out = await checkImage(raw);
    expect(out).toMatchObject({ exitCode: 63, result: undefined });
    expect(out.error).toBe('This image format does not support checks');
  });

  it('refuses to repair a read-only device', async () => {
    const dev = await openForCheck(await newImage(), false);
    await expect(checkQcow2(dev, { repair: 'all' })).rejects.toThrow(/read-only/);
    await dev.close();
  });

  it('streams the diagnostics as they are found', async () => {
    const storage = await withData();
    await storage.truncate(11 * 0x10000);
    await poke(storage, RB + 2 * 10, u16(1));
    const dev = await openForCheck(storage, false);
    const seen: string[] = [];
    const report = await checkQcow2(dev, {}, { onMessage: (m) => seen.push(m.text) });
    await dev.close();
    expect(seen).toEqual(['Leaked cluster 10 refcount=1 reference=0']);
    expect(report.messages.map((m) => m.text)).toEqual(seen);
    expect(report).toMatchObject({ leaks: 1, corruptions: 0, checkErrors: 0 });
  });
});
