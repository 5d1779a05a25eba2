// Engine regression: qcow2_do_open() says "Unsupported encryption method %d" (no colon).
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/block/memory-storage.js';
import { createQcow2 } from '../../src/qcow2/create.js';
import { openQcow2 } from '../../src/qcow2/open.js';

describe('crypt_method', () => {
  it("is printed as a signed int, as QEMU's %d does", async () => {
    const storage = new MemoryStorage();
    await (await createQcow2(storage, { size: 1 << 20 }, { filename: 'mem.qcow2' })).close();
    await storage.write(new Uint8Array([0xd7, 0, 0, 0]), 32);
    await expect(openQcow2(storage, { filename: 'mem.qcow2', readOnly: true })).rejects.toThrow(
      /^Unsupported encryption method -687865856$/,
    );
  });

  it("an unknown method is refused with QEMU's wording", async () => {
    const storage = new MemoryStorage();
    await (await createQcow2(storage, { size: 1 << 20 }, { filename: 'mem.qcow2' })).close();
    await storage.write(new Uint8Array([0, 0, 0, 207]), 32);
    await expect(openQcow2(storage, { filename: 'mem.qcow2', readOnly: true })).rejects.toThrow(
      /^Unsupported encryption method 207$/,
    );
  });
});
