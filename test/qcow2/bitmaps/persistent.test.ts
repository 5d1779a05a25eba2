// PersistentBitmaps over in-memory images: store/load round trips, tracking of guest writes,
// what stays untouched, crash consistency at every write of a session, resize, QEMU's messages,
// and bounded work on hostile directories.
import { describe, expect, it } from 'vitest';
import type { Storage } from '../../../src/block/storage.js';
import { MemoryStorage } from '../../../src/block/memory-storage.js';
import { createQcow2 } from '../../../src/qcow2/create.js';
import { openQcow2 } from '../../../src/qcow2/open.js';
import type { Qcow2Device } from '../../../src/qcow2/qcow2-device.js';
import {
  BME_FLAG_AUTO,
  BME_FLAG_IN_USE,
  encodeBitmapDirectory,
  persistentBitmaps,
  readBitmapList,
} from '../../../src/qcow2/bitmaps/index.js';
import { AUTOCLEAR_BITMAPS } from '../../../src/qcow2/constants.js';
import { CrashingStorage } from '../../support/crashing-storage.js';

const MiB = 1024 * 1024;

async function newImage(size = 64 * MiB, version: 2 | 3 = 3): Promise<MemoryStorage> {
  const storage = new MemoryStorage();
  const dev = await createQcow2(storage, { size, version }, { filename: 'mem.qcow2' });
  await dev.close();
  return storage;
}

function open(storage: Storage, readOnly = false): Promise<Qcow2Device> {
  return openQcow2(storage, { filename: 'mem.qcow2', readOnly });
}

async function bytesOf(storage: MemoryStorage): Promise<Uint8Array> {
  const buf = new Uint8Array(await storage.size());
  await storage.read(buf, 0);
  return buf;
}

/** Bitmaps of the image as a read-only QEMU open loads them, by name. */
async function loaded(storage: Storage) {
  const dev = await open(storage, true);
  try {
    const set = persistentBitmaps(dev);
    await set.loadAll();
    const list = await readBitmapList(dev);
    const out = list.map((e) => {
      const b = set.find(e.name)!;
      return {
        name: e.name,
        flags: e.flags,
        tableOffset: e.tableOffset,
        granularity: b.granularity,
        ranges: [...b.dirtyRanges()],
      };
    });
    return out.sort((a, b) => (a.name < b.name ? -1 : 1));
  } finally {
    await dev.close();
  }
}

/** b0: enabled, 64 KiB granules, one old dirty range; b1: disabled, 4 KiB granules. */
async function imageWithBitmaps(): Promise<MemoryStorage> {
  const storage = await newImage();
  const dev = await open(storage);
  const set = persistentBitmaps(dev);
  const b0 = await set.add('b0');
  await set.add('b1', { granularity: 4096, disabled: true });
  b0.setDirty(5 * MiB, 1);
  await dev.close();
  return storage;
}

describe('persistent bitmaps', () => {
  it('stores added bitmaps on close and loads them back', async () => {
    const storage = await imageWithBitmaps();
    const list = await loaded(storage);
    expect(list.map((b) => [b.name, b.flags, b.granularity])).toEqual([
      ['b0', BME_FLAG_AUTO, 65536],
      ['b1', 0, 4096],
    ]);
    expect(list[0]!.ranges).toEqual([{ offset: 5 * MiB, length: 65536 }]);
    expect(list[1]!.ranges).toEqual([]);
  });

  it('tracks writes, zero writes and discards in enabled bitmaps; disabled ones stay as they were', async () => {
    const storage = await imageWithBitmaps();
    const before = await loaded(storage);
    const dev = await open(storage);
    await dev.write(new Uint8Array(100).fill(1), 65530);
    await dev.writeZeroes(20 * MiB, 70000);
    await dev.discard(40 * MiB + 1, 10); // nothing to discard, still dirty as in QEMU
    await dev.close();
    const after = await loaded(storage);
    expect(after[0]!.flags).toBe(BME_FLAG_AUTO);
    expect(after[0]!.ranges).toEqual([
      { offset: 0, length: 131072 },
      { offset: 5 * MiB, length: 65536 },
      { offset: 20 * MiB, length: 131072 },
      { offset: 40 * MiB, length: 65536 },
    ]);
    expect(after[1]).toEqual(before[1]); // same flags, bits and table
  });

  it('leaves an image opened read-write but never written byte for byte as it was', async () => {
    const storage = await imageWithBitmaps();
    const before = await bytesOf(storage);
    const dev = await open(storage);
    const buf = new Uint8Array(4096);
    await dev.read(buf, 0);
    await dev.flush();
    await dev.close();
    expect(await bytesOf(storage)).toEqual(before);
  });

  it('marks bitmaps in use before the first write reaches the disk, and a killed writer leaves them so', async () => {
    const storage = await imageWithBitmaps();
    const dev = await open(storage);
    await dev.write(new Uint8Array(512).fill(7), 0);
    // Killed here: no close. The enabled bitmap is in use, the disabled one untouched.
    let list = await loaded(storage);
    expect(list.map((b) => b.flags)).toEqual([BME_FLAG_AUTO | BME_FLAG_IN_USE, 0]);
    // A later session keeps the in-use bitmap as it is (inconsistent) and tracks nothing in it.
    const again = await open(storage);
    await again.write(new Uint8Array(512).fill(8), 10 * MiB);
    await again.close();
    list = await loaded(storage);
    expect(list[0]!.flags).toBe(BME_FLAG_AUTO | BME_FLAG_IN_USE);
    const ro = await open(storage, true);
    const set = persistentBitmaps(ro);
    await set.loadAll();
    expect(set.find('b0')!.inconsistent).toBe(true);
    await expect(set.clear('b0')).rejects.toMatchObject({
      message: "Bitmap 'b0' is readonly and cannot be modified",
    });
    await ro.close();
  });

  it('never leaves a stale bitmap that claims to be consistent, wherever the writer dies', async () => {
    const template = await bytesOf(await imageWithBitmaps());
    const write = { offset: 30 * MiB, length: 3 * 65536 };
    const oldRanges = [{ offset: 5 * MiB, length: 65536 }];
    const newRanges = [...oldRanges, write];
    let completed = false;
    for (let budget = 0; !completed && budget < 200; budget++) {
      const inner = new MemoryStorage();
      await inner.write(template, 0);
      const storage = new CrashingStorage(inner, budget);
      try {
        const dev = await open(storage);
        await dev.write(new Uint8Array(write.length).fill(0xaa), write.offset).catch(() => {});
        await dev.close().catch(() => {});
      } catch {
        /* killed during open */
      }
      completed = !storage.crashed;
      const dev = await open(inner, true);
      const enabled = (dev.header.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n;
      const data = new Uint8Array(write.length);
      await dev.read(data, write.offset);
      await dev.close();
      if (!enabled) continue; // every bitmap dropped: QEMU trusts none of them
      const list = await loaded(inner);
      const b0 = list.find((b) => b.name === 'b0')!;
      const b1 = list.find((b) => b.name === 'b1')!;
      expect(b1.flags, `budget ${budget}`).toBe(0);
      if (b0.flags & BME_FLAG_IN_USE) continue; // inconsistent: fine
      // Consistent: it must cover what reached the disk.
      if (data.some((b) => b !== 0)) expect(b0.ranges, `budget ${budget}`).toEqual(newRanges);
      else expect([oldRanges, newRanges], `budget ${budget}`).toContainEqual(b0.ranges);
    }
    expect(completed).toBe(true);
  });

  it('resizes bitmaps with the image and refuses while one is inconsistent', async () => {
    const storage = await imageWithBitmaps();
    const dev = await open(storage);
    await dev.grow(200 * MiB);
    await dev.close();
    const list = await loaded(storage);
    expect(list.map((b) => [b.name, b.flags])).toEqual([
      ['b0', BME_FLAG_AUTO],
      ['b1', 0],
    ]);
    expect(list[0]!.ranges).toEqual([{ offset: 5 * MiB, length: 65536 }]);
    // Make b0 inconsistent (a killed writer), then try again.
    const killed = await open(storage);
    await killed.write(new Uint8Array(1), 0);
    const dev2 = await open(storage);
    await expect(dev2.grow(300 * MiB)).rejects.toMatchObject({
      message: "Bitmap 'b0' is inconsistent and cannot be used",
      hint: 'Try block-dirty-bitmap-remove to delete this bitmap from disk',
    });
    await dev2.close();
    expect(dev2.size).toBe(200 * MiB);
  });

  it("answers with QEMU's messages", async () => {
    const storage = await imageWithBitmaps();
    const dev = await open(storage);
    const set = persistentBitmaps(dev);
    await expect(set.add('b0')).rejects.toThrow('Bitmap already exists: b0');
    await expect(set.add('')).rejects.toThrow('Bitmap name cannot be empty');
    await expect(set.add('x', { granularity: 1000 })).rejects.toThrow(
      'Granularity must be power of 2 and at least 512',
    );
    await expect(set.add('x', { granularity: 512 })).resolves.toBeDefined(); // 16 KiB of bits
    await expect(set.add('y'.repeat(1024))).rejects.toThrow(
      /^Can't make bitmap 'y+' persistent in '#block1\d\d': Name length exceeds maximum \(1023 characters\)$/,
    );
    await expect(set.clear('nope')).rejects.toThrow("Dirty bitmap 'nope' not found");
    await set.remove('x');
    await dev.close();
    const v2 = await open(await newImage(64 * MiB, 2));
    await expect(persistentBitmaps(v2).add('b0')).rejects.toThrow(
      /^Can't make bitmap 'b0' persistent in '#block1\d\d': Cannot store dirty bitmaps in qcow2 v2 files$/,
    );
    await v2.close();
    const small = await open(await newImage(MiB));
    const other = await open(storage, true);
    const src = persistentBitmaps(other);
    await src.loadAll();
    await persistentBitmaps(small).add('b0');
    await expect(persistentBitmaps(small).merge('b0', src.find('b0')!)).rejects.toThrow(
      `Bitmaps are of different sizes (destination size is ${MiB}, source size is ${64 * MiB}) and can't be merged`,
    );
    await small.close();
    await other.close();
  });

  it('bounds the work a hostile directory can cause (every entry naming the same clusters)', async () => {
    const storage = await imageWithBitmaps();
    const dev = await open(storage);
    const b0 = (await readBitmapList(dev)).find((b) => b.name === 'b0');
    const copies = Array.from({ length: 200 }, (_, i) => ({ ...b0!, name: `c${i}` }));
    const dir = encodeBitmapDirectory(copies, 65536, dev.size)!;
    const at = Math.ceil((await storage.size()) / 65536) * 65536;
    await storage.write(dir, at);
    dev.header.bitmaps = {
      nbBitmaps: copies.length,
      directorySize: dir.length,
      directoryOffset: at,
    };
    await dev.rewriteHeader();
    await dev.close();
    // The open itself fails: bitmaps are verified at open, as QEMU loads them there.
    await expect(open(storage, true)).rejects.toThrow(
      'Bitmap tables and data exceed what the image can hold',
    );
  });
});
