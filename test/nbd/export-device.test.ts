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
