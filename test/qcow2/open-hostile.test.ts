// Engine regressions found by differential fuzzing of check against qemu-img: headers that QEMU
// opens must open (and never surface a raw Node.js error).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileStorage } from '../../src/block/file-storage.js';
import { MemoryStorage } from '../../src/block/memory-storage.js';
import { createQcow2 } from '../../src/qcow2/create.js';
import { openQcow2 } from '../../src/qcow2/open.js';
import { tempDir } from '../support/tmp.js';

async function image(): Promise<MemoryStorage> {
  const storage = new MemoryStorage();
  const dev = await createQcow2(storage, { size: 64 << 20 }, { filename: 'mem.qcow2' });
  await dev.write(new Uint8Array(65536).fill(1), 0);
  await dev.close();
  return storage;
}

const u64 = (v: bigint) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v);
  return b;
};

describe('open on hostile headers QEMU accepts', () => {
  it('a refcount table entry beyond 2^53 (the block reads as zeros)', async () => {
    const mem = await image();
    await mem.write(u64(0x00e8_0000_0002_0000n), 0x10000);
    // Through a real file: positions beyond 2^53 are out of range for Node's fs.
    const path = join(await tempDir(), 't.qcow2');
    const bytes = new Uint8Array(await mem.size());
    await mem.read(bytes, 0);
    await writeFile(path, bytes);
    const storage = await FileStorage.open(path, { readOnly: true });
    const dev = await openQcow2(storage, { filename: path, readOnly: true, checkMode: true });
    await dev.close();
  });

  it('a backing file name of length 0 means no backing file', async () => {
    const storage = await image();
    await storage.write(u64(0x1000n), 8); // backing_file_offset; backing_file_size stays 0
    let asked = false;
    const dev = await openQcow2(storage, {
      filename: 'mem.qcow2',
      readOnly: true,
      openBacking: () => {
        asked = true;
        throw new Error('no backing file should be opened');
      },
    });
    expect(asked).toBe(false);
    const buf = new Uint8Array(4);
    await dev.read(buf, 0);
    expect(buf).toEqual(new Uint8Array(4).fill(1));
    await dev.close();
  });
});
