import { describe, expect, it } from 'vitest';
import { DirtyBitmap } from '../../../src/qcow2/bitmaps/dirty-bitmap.js';

const MiB = 1024 * 1024;
const ranges = (b: DirtyBitmap) => [...b.dirtyRanges()];

describe('DirtyBitmap', () => {
  it('marks every granule a byte range touches (hbitmap_set)', () => {
    const b = new DirtyBitmap({ name: 'b', granularity: 65536, size: 64 * MiB });
    b.setDirty(65535, 2); // straddles granules 0 and 1
    b.setDirty(10 * MiB, 1);
    expect(ranges(b)).toEqual([
      { offset: 0, length: 131072 },
      { offset: 10 * MiB, length: 65536 },
    ]);
    expect(b.count()).toBe(3);
    expect(b.isDirty(65536)).toBe(true);
    expect(b.isDirty(131072)).toBe(false);
    b.setDirty(0, 0); // empty ranges mark nothing
    expect(b.count()).toBe(3);
  });

  it('clamps to the size: the last granule is partial, nothing beyond it is ever set', () => {
    const b = new DirtyBitmap({ name: 'b', granularity: 4096, size: 10000 });
    expect(b.bitCount).toBe(3);
    b.setDirty(9000, 100000);
    expect(ranges(b)).toEqual([{ offset: 8192, length: 1808 }]);
    b.setDirty(20000, 5); // beyond the end
    expect(b.count()).toBe(1);
  });

  it('handles ranges spanning whole 32 KiB chunks and merges runs across them', () => {
    const b = new DirtyBitmap({ name: 'b', granularity: 512, size: 4096 * MiB });
    // 2^18 bits per chunk: 128 MiB of 512-byte granules. Cover chunk 1 entirely and the edges.
    b.setDirty(100 * MiB, 300 * MiB);
    expect(ranges(b)).toEqual([{ offset: 100 * MiB, length: 300 * MiB }]);
    expect(b.count()).toBe((300 * MiB) / 512);
    b.clear();
    expect(b.count()).toBe(0);
    expect(ranges(b)).toEqual([]);
  });

  it('serializes little-endian, bit i of the bitmap in bit i%8 of byte i/8', () => {
    const b = new DirtyBitmap({ name: 'b', granularity: 512, size: 1 * MiB });
    b.setDirty(0, 512); // bit 0
    b.setDirty(9 * 512, 512); // bit 9
    b.setDirty(2047 * 512, 512); // the last bit
    expect(b.serializedSize).toBe(256); // 2048 bits in 64-bit words
    const out = new Uint8Array(256);
    b.readSerialized(0, out);
    expect(out[0]).toBe(0x01);
    expect(out[1]).toBe(0x02);
    expect(out[255]).toBe(0x80);
    const c = new DirtyBitmap({ name: 'c', granularity: 512, size: 1 * MiB });
    c.orSerialized(0, out);
    expect(ranges(c)).toEqual(ranges(b));
  });

  it('ignores serialized bits beyond the end (a hostile data cluster)', () => {
    const b = new DirtyBitmap({ name: 'b', granularity: 512, size: 512 * 3 });
    b.orSerialized(0, new Uint8Array(8).fill(0xff));
    expect(b.count()).toBe(3);
    const out = new Uint8Array(8);
    b.readSerialized(0, out);
    expect([...out]).toEqual([0x07, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('sets all-ones ranges (table entries with bit 0) and lists the dirty blocks', () => {
    const b = new DirtyBitmap({ name: 'b', granularity: 65536, size: 2 ** 40 });
    // 2^24 bits = 2 MiB serialized; one 64 KiB cluster of ones in the middle.
    b.setSerializedOnes(65536 * 3, 65536);
    expect(b.count()).toBe(65536 * 8);
    expect(b.dirtyBlocks(65536)).toEqual([3]);
    expect(b.dirtyBlocks(512)).toEqual(Array.from({ length: 128 }, (_, i) => 384 + i));
    b.setDirty(0, 1);
    expect(b.dirtyBlocks(65536)).toEqual([0, 3]);
    expect(b.dirtyBlocks(4 * MiB)).toEqual([0]);
  });

  it('truncates like hbitmap_truncate: cut bits are dropped, new ones are clean', () => {
    const b = new DirtyBitmap({ name: 'b', granularity: 4096, size: 200 * MiB });
    b.setDirty(0, 200 * MiB); // includes a whole shared chunk
    b.truncate(100 * MiB + 1);
    expect(b.count()).toBe((100 * MiB) / 4096 + 1);
    b.truncate(300 * MiB);
    expect(ranges(b)).toEqual([{ offset: 0, length: 100 * MiB + 4096 }]);
    expect(b.size).toBe(300 * MiB);
  });

  it('merges bit by bit at equal granularity and by byte ranges otherwise (hbitmap_merge)', () => {
    const a = new DirtyBitmap({ name: 'a', granularity: 65536, size: 64 * MiB });
    const fine = new DirtyBitmap({ name: 'f', granularity: 512, size: 64 * MiB });
    fine.setDirty(70000, 10);
    fine.setDirty(200000, 1);
    a.merge(fine);
    expect(ranges(a)).toEqual([
      { offset: 65536, length: 65536 },
      { offset: 196608, length: 65536 },
    ]);
    const coarse = new DirtyBitmap({ name: 'c', granularity: 1 * MiB, size: 64 * MiB });
    coarse.setDirty(3 * MiB, 1);
    fine.merge(coarse);
    expect(fine.count()).toBe(2 + MiB / 512);
    const same = new DirtyBitmap({ name: 's', granularity: 65536, size: 64 * MiB });
    same.setDirty(0, 64 * MiB);
    a.merge(same);
    expect(a.count()).toBe(1024);
  });

  it('refuses granularities QEMU refuses', () => {
    expect(() => new DirtyBitmap({ name: 'x', granularity: 256, size: 1 })).toThrow(RangeError);
    expect(() => new DirtyBitmap({ name: 'x', granularity: 1000, size: 1 })).toThrow(RangeError);
  });

  it('dirtyRanges(from, to) gives the granule-aligned runs meeting the span', () => {
    let seed = 99;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 100; round++) {
      const granularity = 512 * 2 ** rnd(4);
      // Up to ~3 chunks of 2^18 bits, so runs cross chunk and word edges.
      const size = granularity * (1 + rnd(3 * 2 ** 18));
      const b = new DirtyBitmap({ name: 'b', granularity, size });
      for (let i = rnd(8); i > 0; i--) b.setDirty(rnd(size), 1 + rnd(granularity * 100));
      if (rnd(4) === 0) b.setDirty(rnd(size), 2 ** 18 * granularity); // whole (FULL) chunks
      const from = rnd(size);
      const to = from + 1 + rnd(size - from);
      const g = granularity;
      const expected = ranges(b)
        .filter((r) => r.offset < Math.ceil(to / g) * g && r.offset + r.length > from)
        .map((r) => {
          const start = Math.max(r.offset, Math.floor(from / g) * g);
          const end = Math.min(r.offset + r.length, Math.ceil(to / g) * g, size);
          return { offset: start, length: end - start };
        });
      expect([...b.dirtyRanges(from, to)], `round ${round}`).toEqual(expected);
    }
  });
});
