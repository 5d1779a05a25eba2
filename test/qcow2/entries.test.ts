import { describe, expect, it } from 'vitest';
import {
  bitRange,
  clusterType,
  compressedLocation,
  entryOffset,
  makeCompressedEntry,
  makeEntry,
  readL2Entry,
  subclusterType,
  writeL2Entry,
} from '../../src/qcow2/l2-entry.js';
import { makeLayout } from '../../src/qcow2/layout.js';
import { getRefcount, refcountMetadataSize, setRefcount } from '../../src/qcow2/refcount.js';

const std = makeLayout(16, 4, false);
const ext = makeLayout(16, 4, true);

describe('L2 entries', () => {
  it('classifies standard entries like qcow2_get_cluster_type', () => {
    expect(clusterType(makeEntry(0), std, false)).toBe('unallocated');
    expect(clusterType(makeEntry(0, { zero: true }), std, false)).toBe('zero-plain');
    expect(clusterType(makeEntry(0x50000, { zero: true, copied: true }), std, false)).toBe(
      'zero-alloc',
    );
    expect(clusterType(makeEntry(0x50000, { copied: true }), std, false)).toBe('normal');
    // Offset 0 with COPIED is a real cluster in an external data file.
    expect(clusterType(makeEntry(0, { copied: true }), std, true)).toBe('normal');
  });

  it('decodes the compressed descriptor QEMU wrote (qcow2.md example)', () => {
    const e = { hi: 0x40400000, lo: 0x000501e0, zeroBits: 0, allocBits: 0 };
    expect(clusterType(e, std, false)).toBe('compressed');
    expect(compressedLocation(e, std)).toEqual({ offset: 0x501e0, size: 544 });
    const again = makeCompressedEntry(0x501e0, 544, std);
    expect(compressedLocation(again, std)).toEqual({ offset: 0x501e0, size: 544 });
  });

  it('round-trips entries through a table, with extended L2 bitmaps', () => {
    const table = new Uint8Array(65536);
    const e = makeEntry(0x123450000, { copied: true }, { allocBits: 0x30, zeroBits: 0xffff0000 });
    writeL2Entry(table, 7, ext, e);
    const back = readL2Entry(table, 7, ext);
    expect(entryOffset(back)).toBe(0x123450000);
    expect(back.allocBits).toBe(0x30);
    expect(back.zeroBits).toBe(0xffff0000);
    const type = clusterType(back, ext, false);
    expect(subclusterType(back, type, ext, 4)).toBe('normal');
    expect(subclusterType(back, type, ext, 0)).toBe('unallocated-alloc');
    expect(subclusterType(back, type, ext, 31)).toBe('zero-alloc');
  });

  it('flags invalid subcluster bitmaps', () => {
    const both = makeEntry(0x50000, { copied: true }, { allocBits: 1, zeroBits: 1 });
    expect(subclusterType(both, 'normal', ext, 0)).toBe('invalid');
    const allocWithoutCluster = makeEntry(0, {}, { allocBits: 1 });
    expect(subclusterType(allocWithoutCluster, 'unallocated', ext, 3)).toBe('invalid');
  });

  it('bitRange covers [from, to)', () => {
    expect(bitRange(0, 32)).toBe(0xffffffff);
    expect(bitRange(4, 6)).toBe(0x30);
    expect(bitRange(31, 32)).toBe(0x80000000);
    expect(bitRange(5, 5)).toBe(0);
  });
});

describe('refcounts', () => {
  it.each([0, 1, 2, 3, 4, 5, 6])('get/set round-trip at order %i', (order) => {
    const block = new Uint8Array(4096);
    const max = order >= 6 ? 2 ** 53 - 1 : 2 ** (2 ** order) - 1;
    const values = [0, 1, max, Math.floor(max / 2)];
    values.forEach((v, i) => setRefcount(block, i * 3 + 1, order, v));
    values.forEach((v, i) => expect(getRefcount(block, i * 3 + 1, order)).toBe(v));
    // Neighbours untouched.
    expect(getRefcount(block, 0, order)).toBe(0);
    expect(getRefcount(block, 2, order)).toBe(0);
  });

  it('sub-byte widths are LSB-first (qcow2.rst)', () => {
    const block = new Uint8Array(1);
    setRefcount(block, 0, 0, 1);
    setRefcount(block, 3, 0, 1);
    expect(block[0]).toBe(0b00001001);
  });

  it('metadata size matches QEMU for a 1 TiB image (qcow2_refcount_metadata_size)', () => {
    // 1 TiB of 64 KiB clusters: 16 Mi clusters, 512 refblocks, 1 reftable cluster.
    expect(refcountMetadataSize(2 ** 24, 65536, 4, false)).toEqual({
      bytes: (513 + 1) * 65536,
      blocks: 513,
      tableClusters: 1,
    });
  });
});
