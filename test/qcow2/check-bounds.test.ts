// The check on hostile metadata stays bounded in time and memory, and the in-memory refcount
// table behaves like QEMU's flat array (overflow at refcount_max, on-disk block encoding).

import { describe, expect, it } from 'vitest';
import { Imrt } from '../../src/qcow2/check/imrt.js';
import { makeLayout } from '../../src/qcow2/layout.js';
import { getRefcount } from '../../src/qcow2/refcount.js';
import { check, entry, newImage, poke, u64 } from './check-helpers.js';

describe('check on hostile metadata', () => {
  it('stops an L1 table whose 4 million entries all point at one L2 table', async () => {
    const storage = await newImage();
    const l1Offset = 16 << 20;
    const l1Size = 4 * 1024 * 1024; // QEMU's 32 MiB maximum
    const l1 = new Uint8Array(l1Size * 8);
    const e = entry(0x40000);
    for (let i = 0; i < l1Size; i++) l1.set(e, i * 8);
    await poke(storage, l1Offset, l1);
    await poke(storage, 36, new Uint8Array([0x00, 0x40, 0x00, 0x00]));
    await poke(storage, 40, u64(l1Offset));
    // qemu-img would read that L2 table four million times; vmforge gives up early.
    const out = await check(storage);
    expect(out.lines).toContain(
      'ERROR: check aborted: the metadata references more tables than the image file can hold',
    );
    expect(out.lines.at(-1)).toBe('qemu-img: Check failed: File too large');
    expect(out.exitCode).toBe(1);
  });

  it('a refcount table entry far beyond 2^53 is reported exactly', async () => {
    const storage = await newImage();
    await poke(storage, 0x10008, u64(0xffff_ffff_ffff_0000n));
    const out = await check(storage);
    expect(out.lines).toEqual(['ERROR refcount block 1 is outside image']);
  });
});

describe('Imrt', () => {
  it('starts at zero, grows on demand and never shrinks', () => {
    const imrt = new Imrt(makeLayout(16, 4, false), 10);
    expect(imrt.size).toBe(10);
    expect(imrt.get(5)).toBe(0);
    imrt.set(5, 3);
    expect(imrt.get(5)).toBe(3);
    imrt.resize(100_000);
    expect(imrt.size).toBe(100_000);
    imrt.resize(50);
    expect(imrt.size).toBe(100_000);
    expect(imrt.hasPage(0)).toBe(true);
    expect(imrt.hasPage(3)).toBe(false);
  });

  it('knows refcount_max for every width', () => {
    expect(new Imrt(makeLayout(16, 0, false), 1).max).toBe(1);
    expect(new Imrt(makeLayout(16, 3, false), 1).max).toBe(255);
    expect(new Imrt(makeLayout(16, 5, false), 1).max).toBe(0xffff_ffff);
    expect(new Imrt(makeLayout(16, 6, false), 1).max).toBe(Number.POSITIVE_INFINITY);
  });

  it('encodes a page as an on-disk refcount block', () => {
    for (const order of [0, 1, 2, 3, 4, 5, 6]) {
      const layout = makeLayout(9, order, false);
      const imrt = new Imrt(layout, layout.refblockEntries);
      imrt.set(0, 1);
      imrt.set(layout.refblockEntries - 1, 1);
      const block = imrt.encodePage(0);
      expect(block.length).toBe(512);
      expect(getRefcount(block, 0, order)).toBe(1);
      expect(getRefcount(block, 1, order)).toBe(0);
      expect(getRefcount(block, layout.refblockEntries - 1, order)).toBe(1);
    }
  });
});
