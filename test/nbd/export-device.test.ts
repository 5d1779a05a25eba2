// qemu-nbd block options applied by ExportDevice.
import { describe, expect, it } from 'vitest';
import type { BlockDevice } from '../../src/block/device.js';
import { ExportDevice } from '../../src/nbd/export-device.js';
import { memoryDevice } from './helpers.js';

/** Record the calls made to a device. */
function spy(dev: BlockDevice) {
  const calls: string[] = [];
  const proxy = new Proxy(dev, {
    get(target, prop) {
      const v = Reflect.get(target, prop) as unknown;
      if (
        typeof v === 'function' &&
        ['write', 'writeZeroes', 'discard', 'flush'].includes(String(prop))
      ) {
        return (...args: unknown[]) => {
          calls.push(
            `${String(prop)} ${JSON.stringify(args.filter((a) => !(a instanceof Uint8Array)))}`,
          );
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { proxy, calls };
}

describe('ExportDevice', () => {
  it('writethrough: every write is FUA; unsafe: flushes vanish', async () => {
    const s = spy(await memoryDevice(4096));
    const wt = new ExportDevice(s.proxy, { cache: 'writethrough' });
    await wt.write(new Uint8Array(1), 0);
    expect(s.calls.pop()).toBe('write [0,{"fua":true}]');
    const un = new ExportDevice(s.proxy, { cache: 'unsafe' });
    await un.flush();
    await un.write(new Uint8Array(1), 0, { fua: true });
    expect(s.calls).toEqual(['write [0,{"fua":false}]']);
  });

  it('discard=ignore: TRIM does nothing and zeroing never unmaps', async () => {
    const s = spy(await memoryDevice(4096));
    const d = new ExportDevice(s.proxy);
    await d.discard(0, 4096);
    await d.writeZeroes(0, 4096, { mayUnmap: true });
    expect(s.calls).toEqual(['writeZeroes [0,4096,{"mayUnmap":false,"fua":false}]']);
    const u = new ExportDevice(s.proxy, { discard: 'unmap' });
    await u.discard(0, 512);
    expect(s.calls.pop()).toBe('discard [0,512,{"fua":false}]');
  });

  it('detect-zeroes turns all-zero writes into zero writes', async () => {
    const s = spy(await memoryDevice(4096));
    const on = new ExportDevice(s.proxy, { detectZeroes: 'on' });
    await on.write(new Uint8Array(512), 512);
    expect(s.calls.pop()).toBe('writeZeroes [512,512,{"fua":false,"mayUnmap":false}]');
    const unmap = new ExportDevice(s.proxy, { detectZeroes: 'unmap', discard: 'unmap' });
    await unmap.write(new Uint8Array(512), 0);
    expect(s.calls.pop()).toBe('writeZeroes [0,512,{"fua":false,"mayUnmap":true}]');
    await unmap.write(Uint8Array.of(1), 0);
    expect(s.calls.pop()).toMatch(/^write /);
    expect(() => new ExportDevice(s.proxy, { detectZeroes: 'unmap' })).toThrow(
      'setting detect-zeroes to unmap is not allowed',
    );
  });

  it('offset exports a window of the device', async () => {
    const dev = await memoryDevice(8192, (i) => i & 0xff);
    const d = new ExportDevice(dev, { offset: 4096 });
    expect(d.size).toBe(4096);
    const b = new Uint8Array(4);
    await d.read(b, 0);
    expect([...b]).toEqual([0, 1, 2, 3]);
    const ext = await d.blockStatus(0, 4096);
    expect(ext[0]!.offset).toBe(0);
  });

  it('a probed raw image refuses to get a qcow2 header in block 0', async () => {
    const d = new ExportDevice(await memoryDevice(4096), { probedRaw: true });
    await expect(d.write(Uint8Array.of(0x51, 0x46, 0x49, 0xfb), 0)).rejects.toMatchObject({
      errno: 'EPERM',
    });
    await d.write(Uint8Array.of(1, 2, 3, 4), 0);
  });
});

describe('ExportDevice block-status cache', () => {
  const MiB = 1 << 20;
  /** A device whose status is a model: `dataAt(offset)` per 1 MiB stripe; counts queries. */
  async function modelled(size: number, dataAt: (stripe: number) => boolean) {
    const dev = await memoryDevice(size);
    let queries = 0;
    const model = { dataAt };
    const proxy = new Proxy(dev, {
      get(target, prop) {
        if (prop === 'blockStatus') {
          return async (offset: number, length: number) => {
            queries++;
            const stripe = Math.floor(offset / MiB);
            const data = model.dataAt(stripe);
            let end = (stripe + 1) * MiB;
            while (end < offset + length && model.dataAt(end / MiB) === data) end += MiB;
            end = Math.min(end, offset + length);
            return [{ offset, length: end - offset, allocated: true, data, zero: !data, depth: 0 }];
          };
        }
        const v: unknown = Reflect.get(target, prop);
        return typeof v === 'function' ? (v as () => unknown).bind(target) : v;
      },
    });
    return { proxy, model, queries: () => queries };
  }

  function expected(dataAt: (s: number) => boolean, offset: number, length: number, size: number) {
    const stripe = Math.floor(offset / MiB);
    const data = dataAt(stripe);
    let end = (stripe + 1) * MiB;
    while (end < Math.min(offset + length, size) && dataAt(end / MiB) === data) end += MiB;
    return { data, length: Math.min(end, offset + length) - offset };
  }

  it('random single-extent queries: answers equal the model, and a covered device stops asking', async () => {
    const size = 256 * MiB;
    const allData = () => true;
    const m = await modelled(size, allData);
    const dev = new ExportDevice(m.proxy);
    let seed = 7;
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) >>> 0) % n;
    for (let i = 0; i < 400; i++) {
      const offset = rnd(size - 4096);
      const length = 1 + rnd(256 * 1024);
      const [e] = await dev.blockStatus(offset, Math.min(length, size - offset), { maxExtents: 1 });
      expect(e).toMatchObject({ offset, data: true, zero: false });
      expect(e!.length).toBe(Math.min(length, size - offset));
    }
    // Answers of up to 64 MiB, merged: the device is covered after a few dozen queries (29
    // with this seed), where a cache of the last answer alone asked for nearly every read.
    expect(m.queries()).toBeLessThan(50);
  });

  it('stripes of data and holes stay exact; a write forgets everything learnt', async () => {
    const size = 64 * MiB;
    const m = await modelled(size, (s) => s % 3 !== 1);
    const dev = new ExportDevice(m.proxy);
    let seed = 3;
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) >>> 0) % n;
    const check = async () => {
      for (let i = 0; i < 300; i++) {
        const offset = rnd(size - 1);
        const length = 1 + rnd(Math.min(3 * MiB, size - offset));
        const [e] = await dev.blockStatus(offset, length, { maxExtents: 1 });
        const want = expected(m.model.dataAt, offset, length, size);
        expect(e, `${offset}+${length}`).toMatchObject({
          offset,
          data: want.data,
          length: want.length,
        });
      }
    };
    await check();
    m.model.dataAt = (s) => s % 2 === 0;
    await dev.write(new Uint8Array(1), 0);
    await check();
  });
});
