// -s snapshot overlay: writes never reach the base, reads merge both, concurrent partial writes
// to one cluster keep every byte, status reports which layer answered.
import { afterEach, describe, expect, it } from 'vitest';
import { OverlayDevice } from '../../src/nbd/overlay-device.js';
import { tempDir } from '../support/tmp.js';
import { memoryDevice } from './helpers.js';

const opened: OverlayDevice[] = [];
afterEach(async () => {
  while (opened.length) await opened.pop()!.close();
});

const pattern = (i: number) => (i * 13) & 0xff;

async function overlay(size = 1 << 20) {
  const base = await memoryDevice(size, pattern);
  const dev = await OverlayDevice.create(base, await tempDir());
  opened.push(dev);
  return { base, dev };
}

describe('OverlayDevice', () => {
  it('writes go to the overlay, the base is untouched', async () => {
    const { base, dev } = await overlay();
    await dev.write(new Uint8Array(1000).fill(0xaa), 70_000);
    const top = new Uint8Array(3000);
    await dev.read(top, 69_000);
    for (let i = 0; i < 3000; i++) {
      const inWrite = i >= 1000 && i < 2000;
      expect(top[i]).toBe(inWrite ? 0xaa : pattern(69_000 + i));
    }
    const below = new Uint8Array(1000);
    await base.read(below, 70_000);
    expect(below.every((b, i) => b === pattern(70_000 + i))).toBe(true);
  });

  it('concurrent partial writes to one cluster keep every byte', async () => {
    const { dev } = await overlay();
    await Promise.all(
      Array.from({ length: 64 }, (_, k) =>
        dev.write(new Uint8Array(16).fill(k + 1), 65536 + k * 1000),
      ),
    );
    const buf = new Uint8Array(16);
    for (let k = 0; k < 64; k++) {
      await dev.read(buf, 65536 + k * 1000);
      expect(buf.every((b) => b === k + 1)).toBe(true);
    }
  });

  it('zeroes and discards read as zero; status shows overlay (depth 0) vs base (depth 1)', async () => {
    const { dev } = await overlay();
    await dev.writeZeroes(0, 65536);
    await dev.discard(65536 + 10, 200_000); // covers clusters 2 and 3 fully
    const z = new Uint8Array(65536);
    await dev.read(z, 0);
    expect(z.every((b) => b === 0)).toBe(true);
    await dev.read(z, 131072);
    expect(z.every((b) => b === 0)).toBe(true);
    const ext = await dev.blockStatus(0, 65536);
    expect(ext[0]).toMatchObject({ depth: 0, allocated: true, zero: true });
    const deep = await dev.blockStatus(500_000, 4096);
    expect(deep[0]).toMatchObject({ depth: 1, allocated: true, data: true });
  });
});
