// measure: the qcow2 size formulas (figures taken from qemu-img 7.2 measure runs), the
// allocation walk over a source, the bitmaps rule, option checks in qcow2_measure()'s order.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/block/memory-storage.js';
import { InvalidArgumentError } from '../../src/core/index.js';
import { createImage, openImage } from '../../src/image/index.js';
import {
  measureImage,
  MeasureOptionsError,
  measureQcow2,
  measureRaw,
  qcow2CalcPreallocSize,
  qcow2RefcountMetadataSize,
} from '../../src/img/measure.js';
import { RawDevice } from '../../src/raw/raw-device.js';
import { tempDir } from '../support/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

describe('qcow2 size formulas', () => {
  it('matches qemu-img measure --size figures', async () => {
    // qemu-img measure -O qcow2 --size 1G: required 393216, fully allocated 1074135040
    expect(await measureQcow2({ size: GiB })).toEqual({
      required: 393216,
      'fully-allocated': 1074135040,
    });
    expect(await measureQcow2({ size: 16 * MiB })).toEqual({
      required: 327680,
      'fully-allocated': 17104896,
    });
    expect(await measureQcow2({ size: 0 })).toEqual({
      required: 196608,
      'fully-allocated': 196608,
    });
    // -o refcount_bits=1,cluster_size=512 --size 1
    expect(await measureQcow2({ size: 1, refcountBits: 1, clusterSize: 512 })).toEqual({
      required: 2560,
      'fully-allocated': 3072,
    });
    // -o preallocation=full: every data cluster is required
    const full = await measureQcow2({ size: GiB, preallocation: 'full' });
    expect(full.required).toBe(full['fully-allocated']);
  });

  it('computes beyond 2^53 exactly (2 MiB clusters, exabytes)', async () => {
    // qemu-img measure -O qcow2 -o cluster_size=2M --size 2E --output=json
    expect(await measureQcow2({ size: 2n ** 61n, clusterSize: 2 * MiB })).toEqual({
      required: 10995174998016,
      'fully-allocated': 2305854004388691968n,
    });
    expect(measureRaw({ size: 2n ** 63n - 1n })).toEqual({
      required: 2n ** 63n,
      'fully-allocated': 2n ** 63n,
    });
  });

  it('finds the refcount fixed point', () => {
    // 1 cluster of 64 KiB with 16-bit refcounts: one refblock and one reftable cluster.
    expect(qcow2RefcountMetadataSize(1n, 65536n, 4)).toBe(2n * 65536n);
    // 1-bit refcounts of 512-byte clusters: 4096 clusters per block.
    expect(qcow2RefcountMetadataSize(4096n, 512n, 0)).toBe(3n * 512n);
    // the generous variant leaves room for half the table again: a second refblock here
    expect(qcow2RefcountMetadataSize(32766n, 65536n, 4)).toBe(2n * 65536n);
    expect(qcow2RefcountMetadataSize(32766n, 65536n, 4, true)).toBe(3n * 65536n);
    expect(qcow2CalcPreallocSize(BigInt(GiB), 65536n, 4, false)).toBe(1074135040n);
  });

  it('refuses sizes whose L1 table would pass 32 MiB', async () => {
    await expect(measureQcow2({ size: 2n ** 60n })).rejects.toThrow(
      'The image size is too large (try using a larger cluster size)',
    );
  });
});

describe('measuring a source image', () => {
  async function sparseRaw(): Promise<RawDevice> {
    // MemoryStorage reports holes per 64 KiB page: data in pages 0, 1 and 5.
    const storage = new MemoryStorage(16 * MiB);
    await storage.write(new Uint8Array(100).fill(1), 0);
    await storage.write(new Uint8Array(10).fill(2), 70_000);
    await storage.write(new Uint8Array(4096).fill(3), 5 * 65536);
    return RawDevice.open(storage);
  }

  it('counts the clusters holding data', async () => {
    const source = await sparseRaw();
    const meta = 17104896 - 16 * MiB; // measure --size 16M: fully allocated minus data
    expect(await measureQcow2({}, { source })).toEqual({
      required: meta + 3 * 65536,
      'fully-allocated': 17104896,
    });
    // 2 MiB clusters: the three pages share one cluster.
    const big = await measureQcow2({ clusterSize: 2 * MiB }, { source });
    expect(Number(big['fully-allocated']) - Number(big.required)).toBe(16 * MiB - 2 * MiB);
    // A backing file: everything counts.
    const backed = await measureQcow2({ backingFile: true }, { source });
    expect(backed.required).toBe(backed['fully-allocated']);
    // Raw sources never report bitmaps; raw targets are the virtual size.
    expect(await measureQcow2({}, { source })).not.toHaveProperty('bitmaps');
    expect(measureRaw({}, { source })).toEqual({
      required: 16 * MiB,
      'fully-allocated': 16 * MiB,
    });
  });

  it('reports bitmaps for a qcow2 v3 source and a v3 target only', async () => {
    const dir = await tempDir();
    const v3 = join(dir, 'v3.qcow2');
    const v2 = join(dir, 'v2.qcow2');
    await createImage(v3, { format: 'qcow2', size: 4 * MiB });
    await createImage(v2, { format: 'qcow2', size: 4 * MiB, version: 2 });
    const d3 = await openImage(v3);
    const d2 = await openImage(v2);
    try {
      expect((await measureQcow2({}, { source: d3 })).bitmaps).toBe(0);
      expect(await measureQcow2({ version: 2 }, { source: d3 })).not.toHaveProperty('bitmaps');
      expect(await measureQcow2({}, { source: d2 })).not.toHaveProperty('bitmaps');
    } finally {
      await d3.close();
      await d2.close();
    }
  });

  it('stops when the signal fires', async () => {
    const source = await sparseRaw();
    const ac = new AbortController();
    ac.abort();
    await expect(measureQcow2({}, { source, signal: ac.signal })).rejects.toMatchObject({
      code: 'VMF_ABORTED',
    });
  });
});

describe('measureImage option handling', () => {
  const fails = (options: string, format = 'qcow2') => measureImage({ format, options, size: GiB });

  it('checks the options in qcow2_measure order with its messages', async () => {
    await expect(fails('cluster_size=1000')).rejects.toThrow(
      'Cluster size must be a power of two between 512 and 2048k',
    );
    await expect(fails('cluster_size=8k,extended_l2=on')).rejects.toThrow(
      'Extended L2 entries are only supported with cluster sizes of at least 16384 bytes',
    );
    await expect(fails('compat=v4,cluster_size=1000')).rejects.toThrow('Cluster size');
    await expect(fails('compat=v4')).rejects.toThrow("Invalid compatibility level: 'v4'");
    await expect(fails('compat=0.10,refcount_bits=8')).rejects.toThrow(
      'Different refcount widths than 16 bits require compatibility level 1.1',
    );
    await expect(fails('refcount_bits=3')).rejects.toThrow(
      'Refcount width must be a power of two and may not exceed 64 bits',
    );
    await expect(fails('preallocation=bogus')).rejects.toThrow('invalid parameter value: bogus');
    await expect(fails('encrypt.format=luks')).rejects.toThrow(
      "Parameter 'encrypt.key-secret' is required for cipher",
    );
    await expect(fails('encrypt.format=luks,encrypt.key-secret=s0')).rejects.toThrow(
      "No secret with id 's0'",
    );
  });

  it('marks -o parse errors so the CLI can add the second line', async () => {
    const err = await fails('bogus=1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MeasureOptionsError);
    expect(err).toMatchObject({ message: "Invalid parameter 'bogus'", format: 'qcow2' });
    expect(await fails('cluster_size=64k', 'raw').catch((e: unknown) => e)).toBeInstanceOf(
      MeasureOptionsError,
    );
  });

  it('accepts bare flags as QEMU does and ignores options that do not change the size', async () => {
    const plain = await measureImage({ format: 'qcow2', size: GiB });
    expect(await measureImage({ format: 'qcow2', options: 'noextended_l2', size: GiB })).toEqual(
      plain,
    );
    expect(
      await measureImage({
        format: 'qcow2',
        options: 'compression_type=bogus,lazy_refcounts=on,nocow=on',
        size: GiB,
      }),
    ).toEqual(plain);
    const xl2 = await measureImage({ format: 'qcow2', options: 'extended_l2', size: 16 * GiB });
    expect(xl2['fully-allocated']).toBeGreaterThan(
      Number((await measureImage({ format: 'qcow2', size: 16 * GiB }))['fully-allocated']),
    );
    // --size wins over -o size
    expect(await measureImage({ format: 'qcow2', options: 'size=5G', size: GiB })).toEqual(plain);
  });

  it('names the target format problems as qemu-img does', async () => {
    await expect(measureImage({ format: 'bogus', size: 1 })).rejects.toThrow(
      "Unknown file format 'bogus'",
    );
    await expect(measureImage({ format: 'vmdk', size: 1 })).rejects.toThrow(
      "Block driver 'vmdk' does not support size measurement",
    );
    await expect(measureImage({ format: 'dmg', size: 1 })).rejects.toThrow(
      "Format driver 'dmg' does not support image creation",
    );
    await expect(measureImage({ format: 'luks', size: 1 })).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
    expect(await measureImage({ size: 1000 })).toEqual({
      required: 1024,
      'fully-allocated': 1024,
    });
  });
});
