import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileStorage } from '../../src/block/file-storage.js';
import { tempDir } from '../support/tmp.js';

describe('FileStorage syncWriteMax / syncReadMax', () => {
  it('writes small buffers synchronously and large ones asynchronously, both landing', async () => {
    const dir = await tempDir();
    const path = join(dir, 'f');
    const s = await FileStorage.open(path, { create: true, syncWriteMax: 4096 });
    const small = new Uint8Array(4096).fill(0xab);
    const large = new Uint8Array(3 * 4096 + 7).fill(0xcd);
    const pending = s.write(large, 10_000);
    // A synchronous write is complete before write() returns its promise.
    void s.write(small, 100);
    expect((await readFile(path)).subarray(100, 100 + 4096)).toEqual(Buffer.from(small));
    await pending;
    const back = new Uint8Array(large.length);
    await s.read(back, 10_000);
    expect(back).toEqual(large);
    await s.close();
  });

  it('reports a failed synchronous write with the file name and offset', async () => {
    // /dev/full: every write fails with ENOSPC.
    const s = await FileStorage.open('/dev/full', { syncWriteMax: 4096 });
    await expect(s.write(new Uint8Array(16), 512)).rejects.toThrow(
      "Could not write to '/dev/full' at offset 512",
    );
    await s.close();
  });

  it('reads the same bytes with or without the synchronous page-cache path', async () => {
    const dir = await tempDir();
    const path = join(dir, 'f');
    const w = await FileStorage.open(path, { create: true });
    const data = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
    await w.write(data, 0);
    await w.close();
    for (const syncReadMax of [0, 4096, 2 * 1024 * 1024]) {
      const r = await FileStorage.open(path, { readOnly: true, syncReadMax });
      const back = new Uint8Array(data.length + 100); // past EOF reads as zeros
      back.fill(0xee);
      await r.read(back, 0);
      expect(back.subarray(0, data.length), `syncReadMax ${syncReadMax}`).toEqual(data);
      expect(back.subarray(data.length).every((b) => b === 0)).toBe(true);
      await r.close();
    }
  });
});
