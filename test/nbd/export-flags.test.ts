// Transmission flags as a matrix over (read-only, structured, clients allowed, device multiConn),
// each expected value being what qemu-nbd 7.2 advertises (nbd/server.c nbd_export_create).
import { describe, expect, it } from 'vitest';
import { blockSizes, transmissionFlags } from '../../src/nbd/export-flags.js';
import { normalizeExport } from '../../src/nbd/export.js';
import type { BlockCapabilities, BlockDevice } from '../../src/block/device.js';
import { memoryDevice } from './helpers.js';

/** The same device with some capabilities changed. */
function withCaps(dev: BlockDevice, caps: Partial<BlockCapabilities>): BlockDevice {
  const capabilities = { ...dev.capabilities, ...caps };
  return new Proxy(dev, {
    get: (target, prop) => (prop === 'capabilities' ? capabilities : Reflect.get(target, prop)),
  });
}

describe('transmissionFlags', () => {
  // qemu-nbd -f raw FILE: 0xc6d; -r: 0x50f ... values below are checked against qemu-nbd by
  // test/interop/nbd-compare.test.ts; here they pin the logic.
  const table: [boolean, boolean, boolean, number][] = [
    // readOnly, structured, multipleClients, flags
    [false, false, false, 0x0c6d],
    [false, true, false, 0x0ced],
    [false, true, true, 0x0ded],
    [true, false, false, 0x040f],
    [true, true, false, 0x048f],
    [true, true, true, 0x058f],
  ];
  for (const [readOnly, structured, multipleClients, flags] of table) {
    it(`ro=${readOnly} structured=${structured} multi=${multipleClients} -> 0x${flags.toString(16)}`, async () => {
      const exp = normalizeExport({ device: await memoryDevice(4096), readOnly });
      expect(transmissionFlags(exp, { structured, multipleClients })).toBe(flags);
    });
  }

  it('a read-only device makes a read-only export', async () => {
    const ro = withCaps(await memoryDevice(4096), { readOnly: true });
    expect(normalizeExport({ device: ro }).readOnly).toBe(true);
  });

  it('block sizes: minimum only for clients that will obey it', async () => {
    const aligned = withCaps(await memoryDevice(4096), { requestAlignment: 512 });
    const exp = normalizeExport({ device: aligned });
    expect(blockSizes(exp, false)).toEqual({ minimum: 1, preferred: 4096, maximum: 32 << 20 });
    expect(blockSizes(exp, true)).toEqual({ minimum: 512, preferred: 4096, maximum: 32 << 20 });
  });
});
