// ddImage(): img_dd()'s size arithmetic (count before skip, skip past the end, int64 overflow),
// the copy itself into raw and qcow2, refusing to recreate its own input, and read errors.
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createImage, openImage } from '../../src/image/index.js';
import { ddExtent, ddImage, DdIoError } from '../../src/img/dd.js';
import { tempDir } from '../support/tmp.js';

describe('ddExtent', () => {
  it('follows img_dd arithmetic', () => {
    expect(ddExtent(1 << 20, 512, undefined, undefined)).toEqual({
      outputSize: 1 << 20,
      from: 0,
      to: 1 << 20,
      skipPastEnd: false,
    });
    // count shortens the input first, then skip applies to what is left
    expect(ddExtent(1 << 20, 512, 4n, 1n)).toEqual({
      outputSize: 1536,
      from: 512,
      to: 2048,
      skipPastEnd: false,
    });
    // count beyond the input: all of it
    expect(ddExtent(4096, 512, 100n, undefined).outputSize).toBe(4096);
    // skip exactly to the end: empty, no warning; past it: empty with the warning
    expect(ddExtent(4096, 512, undefined, 8n)).toMatchObject({ outputSize: 0, skipPastEnd: false });
    expect(ddExtent(4096, 512, undefined, 9n)).toMatchObject({ outputSize: 0, skipPastEnd: true });
    // int64 overflow of skip * bs counts as past the end, of count * bs as "all"
    expect(ddExtent(4096, 1 << 20, 2n ** 62n, 2n ** 62n)).toMatchObject({ skipPastEnd: true });
    expect(ddExtent(4096, 1 << 20, 2n ** 62n, undefined)).toMatchObject({ outputSize: 4096 });
    expect(ddExtent(4096, 512, 0n, undefined).outputSize).toBe(0);
  });
});

describe('ddImage', () => {
  const pattern = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7) % 251));

  it('copies the selected blocks into a new raw image', async () => {
    const dir = await tempDir();
    const input = join(dir, 'in.raw');
    await writeFile(input, pattern(10_000));
    const output = join(dir, 'out.raw');
    const r = await ddImage({ input, output, blockSize: 1000, count: 5, skip: 2 });
    expect(r).toEqual({ outputSize: 3000, copied: 3000 });
    const out = await readFile(output);
    expect(out.length).toBe(3072); // raw images are whole sectors
    expect(out.subarray(0, 3000)).toEqual(pattern(10_000).subarray(2000, 5000));
  });

  it('creates a qcow2 output of the input size and copies every byte', async () => {
    const dir = await tempDir();
    const input = join(dir, 'in.qcow2');
    await createImage(input, { format: 'qcow2', size: 3 << 20 });
    const dev = await openImage(input, { readOnly: false });
    await dev.write(pattern(70_000), 1 << 20);
    await dev.close();
    const output = join(dir, 'out.qcow2');
    const progress: number[] = [];
    const r = await ddImage({
      input,
      output,
      outputFormat: 'qcow2',
      blockSize: 65536,
      onProgress: (copied) => progress.push(copied),
    });
    expect(r.outputSize).toBe(3 << 20);
    expect(progress.at(-1)).toBe(3 << 20);
    const out = await openImage(output, { format: 'qcow2' });
    try {
      expect(out.size).toBe(3 << 20);
      const buf = new Uint8Array(70_000);
      await out.read(buf, 1 << 20);
      expect(Buffer.from(buf)).toEqual(pattern(70_000));
      // qemu-img dd writes the zeros too: every cluster is allocated
      const [e] = await out.blockStatus(0, out.size);
      expect(e).toMatchObject({ allocated: true, data: true });
    } finally {
      await out.close();
    }
  });

  it('warns and creates an empty image when skipping past the end', async () => {
    const dir = await tempDir();
    const input = join(dir, 'in.raw');
    await writeFile(input, pattern(4096));
    const warnings: string[] = [];
    const r = await ddImage({
      input,
      output: join(dir, 'o.raw'),
      skip: 100,
      onWarning: (w) => warnings.push(w),
    });
    expect(r).toEqual({ outputSize: 0, copied: 0 });
    expect(warnings).toEqual([`${input}: cannot skip to specified offset`]);
    expect((await stat(join(dir, 'o.raw'))).size).toBe(0);
  });

  it('never recreates its input or a file of its backing chain', async () => {
    const dir = await tempDir();
    const base = join(dir, 'base.raw');
    await writeFile(base, pattern(65536));
    const top = join(dir, 'top.qcow2');
    await createImage(top, { format: 'qcow2', backingFile: 'base.raw', backingFormat: 'raw' });
    for (const [input, output] of [
      [base, base],
      [top, base],
      [top, join(dir, '.', 'top.qcow2')],
    ] as const) {
      await expect(ddImage({ input, output })).rejects.toThrow('Failed to get "write" lock');
    }
    expect(await readFile(base)).toEqual(pattern(65536));
  });

  it('names unknown formats and protocols as qemu-img does', async () => {
    const dir = await tempDir();
    const input = join(dir, 'in.raw');
    await writeFile(input, pattern(512));
    await expect(ddImage({ input, output: 'x', outputFormat: 'bogus' })).rejects.toThrow(
      /^Unknown file format$/,
    );
    await expect(ddImage({ input, output: 'a:b' })).rejects.toThrow("Unknown protocol 'a'");
    await expect(ddImage({ input, output: 'x', outputFormat: 'dmg' })).rejects.toThrow(
      "Format driver 'dmg' does not support image creation",
    );
    await expect(ddImage({ input, output: 'x', outputFormat: 'vmdk' })).rejects.toThrow(
      /not supported by vmforge/,
    );
    await expect(ddImage({ input, output: 'x', blockSize: 0 })).rejects.toThrow(
      'Invalid bs specified. Must be between 1 and 2147483647.',
    );
  });

  it('reports a failing read and keeps the blocks before it', async () => {
    const dir = await tempDir();
    const input = join(dir, 'in.qcow2');
    await createImage(input, { format: 'qcow2', size: 1 << 20 });
    const dev = await openImage(input, { readOnly: false });
    await dev.write(pattern(65536), 0);
    await dev.write(pattern(65536), 512 * 1024);
    await dev.close();
    // Point L1[0] at an unaligned L2 table: reads of the first 512 MiB fail as corrupt.
    const bytes = await readFile(input);
    const l1 = Number(bytes.readBigUInt64BE(40));
    bytes.writeBigUInt64BE(0x8000_0000_0003_0200n, l1);
    await writeFile(input, bytes);
    const err = await ddImage({ input, output: join(dir, 'o.raw') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DdIoError);
    expect(err).toMatchObject({
      message: 'error while reading from input image file',
      cause: { code: 'VMF_QCOW2_CORRUPT' },
    });
  });
});
