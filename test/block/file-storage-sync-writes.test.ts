import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileStorage } from '../../src/block/file-storage.js';
import { tempDir } from '../support/tmp.js';

describe('FileStorage syncWriteMax', () => {
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
});
