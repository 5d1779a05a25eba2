// compareImages(): verdicts and offsets as qemu-img compare reports them, the size-mismatch
// scan, strict mode, progress, cancellation and the two failure kinds (exit 3 and 4).
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BlockDevice } from '../../src/block/device.js';
import { MemoryStorage } from '../../src/block/memory-storage.js';
import { EnvironmentError } from '../../src/core/index.js';
import { createImage, openImage } from '../../src/image/index.js';
import {
  compareImages,
  CompareError,
  firstDifferentSector,
  firstNonZeroSector,
} from '../../src/img/compare.js';
import { RawDevice } from '../../src/raw/raw-device.js';
import { tempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;

async function raw(size: number, writes: [number, number, number][] = []): Promise<RawDevice> {
  const storage = new MemoryStorage(size, `mem${size}`);
  for (const [offset, length, byte] of writes) {
    await storage.write(new Uint8Array(length).fill(byte), offset);
  }
  return RawDevice.open(storage, { filename: `img-${size}-${writes.length}` });
}

/** A device whose reads or block status fail from `failAt` on. */
function failing(dev: BlockDevice, what: 'read' | 'status', failAt: number): BlockDevice {
  const eio = () => new EnvironmentError('boom', { errno: 'EIO' });
  return new Proxy(dev, {
    get(target, prop) {
      if (prop === 'read' && what === 'read') {
        return async (buf: Uint8Array, offset: number) => {
          if (offset + buf.length > failAt) throw eio();
          return target.read(buf, offset);
        };
      }
      if (prop === 'blockStatus' && what === 'status') {
        return async (offset: number, length: number) => {
          if (offset >= failAt) throw eio();
          return target.blockStatus(offset, length);
        };
      }
      // Private fields: getters and methods must run on the real device.
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe('buffer scans', () => {
  it('report sector starts, as compare_buffers and find_nonzero do', () => {
    const a = new Uint8Array(4096);
    const b = new Uint8Array(4096);
    expect(firstDifferentSector(a, b)).toBe(-1);
    b[1500] = 1;
    expect(firstDifferentSector(a, b)).toBe(1024);
    expect(firstNonZeroSector(b)).toBe(1024);
    expect(firstNonZeroSector(a)).toBe(-1);
    const tail = new Uint8Array(1000);
    tail[999] = 1;
    expect(firstNonZeroSector(tail)).toBe(512);
    const big = new Uint8Array(3 * MiB);
    big[2 * MiB + 70_000] = 9;
    expect(firstNonZeroSector(big)).toBe(2 * MiB + 69_632);
  });
});

describe('compareImages', () => {
  it('finds identical content whatever the allocation', async () => {
    const a = await raw(8 * MiB, [[MiB, 4096, 7]]);
    const b = await raw(8 * MiB, [
      [MiB, 4096, 7],
      [3 * MiB, 65536, 0], // written zeros: allocated, still equal
    ]);
    expect(await compareImages(a, b)).toEqual({ status: 'identical', sizeWarning: false });
  });

  it('reports the first differing sector', async () => {
    const a = await raw(8 * MiB, [[MiB, 4096, 7]]);
    const b = await raw(8 * MiB, [
      [MiB, 4096, 7],
      [MiB + 3000, 1, 8],
    ]);
    expect(await compareImages(a, b)).toEqual({
      status: 'content-mismatch',
      offset: MiB + 2560,
      sizeWarning: false,
    });
    // data against a hole: the non-zero side is scanned
    const c = await raw(8 * MiB, [[5 * MiB + 700, 3, 1]]);
    const d = await raw(8 * MiB);
    expect(await compareImages(d, c)).toMatchObject({ offset: 5 * MiB + 512 });
  });

  it('checks the longer image beyond the shorter one', async () => {
    const short = await raw(4 * MiB, [[0, 512, 1]]);
    const zeros = await raw(6 * MiB, [
      [0, 512, 1],
      [5 * MiB, 4096, 0],
    ]);
    const data = await raw(6 * MiB, [
      [0, 512, 1],
      [5 * MiB + 1024, 1, 2],
    ]);
    const warned: string[] = [];
    expect(
      await compareImages(short, zeros, { onSizeMismatch: () => warned.push('warning') }),
    ).toEqual({ status: 'identical', sizeWarning: true });
    expect(warned).toEqual(['warning']);
    expect(await compareImages(data, short)).toEqual({
      status: 'content-mismatch',
      offset: 5 * MiB + 1024,
      sizeWarning: true,
    });
    expect(await compareImages(short, zeros, { strict: true })).toEqual({
      status: 'size-mismatch',
    });
  });

  it('compares allocation status in strict mode', async () => {
    const dir = await tempDir();
    const q = join(dir, 'a.qcow2');
    await createImage(q, { format: 'qcow2', size: 8 * MiB });
    const qdev = await openImage(q, { readOnly: false });
    await qdev.write(new Uint8Array(65536).fill(3), 2 * MiB);
    await qdev.flush();
    const rdev = await raw(8 * MiB, [[2 * MiB, 65536, 3]]);
    try {
      expect(await compareImages(qdev, rdev)).toEqual({ status: 'identical', sizeWarning: false });
      // raw holes read as allocated zeros, qcow2 unallocated clusters as zeros only
      expect(await compareImages(qdev, rdev, { strict: true })).toEqual({
        status: 'block-status-mismatch',
        offset: 0,
      });
      expect(await compareImages(qdev, qdev, { strict: true })).toMatchObject({
        status: 'identical',
      });
    } finally {
      await qdev.close();
    }
  });

  it('reports progress in order up to the longer length', async () => {
    const a = await raw(6 * MiB, [[0, 3 * MiB, 1]]);
    const b = await raw(5 * MiB, [[0, 3 * MiB, 1]]);
    const seen: number[] = [];
    await compareImages(a, b, {
      onProgress: ({ bytes, done, total }) => {
        expect(total).toBe(6 * MiB);
        seen.push(done);
        expect(bytes).toBeGreaterThan(0);
      },
      readAhead: 2,
    });
    expect(seen.at(-1)).toBe(6 * MiB);
    expect([...seen].sort((x, y) => x - y)).toEqual(seen);
  });

  it('stops when the signal fires', async () => {
    const a = await raw(8 * MiB, [[0, 8 * MiB, 1]]);
    const ac = new AbortController();
    const run = compareImages(a, a, { signal: ac.signal, onProgress: () => ac.abort() });
    await expect(run).rejects.toMatchObject({ code: 'VMF_ABORTED' });
  });

  it('tells block status failures (exit 3) from read failures (exit 4)', async () => {
    const a = await raw(8 * MiB, [[0, 8 * MiB, 1]]);
    const b = await raw(8 * MiB, [[0, 8 * MiB, 1]]);
    // (data up to 4 MiB, then a hole: raw data runs are cached as in QEMU, the hole is asked)
    const holed = await raw(8 * MiB, [[0, 4 * MiB, 1]]);
    const status = await compareImages(a, failing(holed, 'status', 4 * MiB)).catch(
      (e: unknown) => e,
    );
    expect(status).toBeInstanceOf(CompareError);
    expect(status).toMatchObject({
      stage: 'block-status',
      image: 2,
      message: `Sector allocation test failed for ${holed.filename}`,
    });
    const read = await compareImages(failing(a, 'read', 3 * MiB), b).catch((e: unknown) => e);
    expect(read).toMatchObject({
      stage: 'read',
      image: 1,
      offset: 2 * MiB,
      message: `Error while reading offset ${2 * MiB} of ${a.filename}`,
    });
    // A failure after a difference is never reported: results are taken in order.
    const c = await raw(8 * MiB, [
      [0, 8 * MiB, 1],
      [100, 1, 2],
    ]);
    expect(await compareImages(c, failing(b, 'read', 6 * MiB))).toMatchObject({
      status: 'content-mismatch',
      offset: 0,
    });
  });
});
