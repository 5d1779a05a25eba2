// The convert copy engine's mapped reads (copy.ts mapChunk, native/mapread.c): data chunks of
// file-backed sources are written from a mapping of the source file, with zero detection from
// the native zero map. What must hold: the mapping really is what feeds the copy (the sources'
// read() is made to fail, and the copy still succeeds with exact content), for raw and qcow2
// sources; the target's layout (which runs became data, which stayed holes) is the same as
// when the chunk is read and scanned in JavaScript; and a chunk that cannot be mapped is read.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BlockDevice } from '../../src/block/device.js';
import { nativeFileOps } from '../../src/block/native.js';
import { createImage } from '../../src/image/create.js';
import { openImage } from '../../src/image/open.js';
import { runCopy } from '../../src/img/convert/copy.js';
import { pseudoRandom } from '../support/imgops-matrix.js';
import { rawCopyPlan, rawLayout, withNewRawTarget } from '../support/copy-plan.js';
import { tempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;
const SECTOR = 512;
const available = Boolean(nativeFileOps()?.mapRead);

/** 6 MiB + 512: random runs, written zeros of several sizes (some under -S), single bytes. */
function sourceBytes(): Buffer {
  const b = Buffer.alloc(6 * MiB + SECTOR);
  pseudoRandom(11, MiB).copy(b, 0); // data
  // 1 MiB..2 MiB: zeros; then data with 2 KiB and 8 KiB zero gaps (below and above -S 4k).
  pseudoRandom(12, MiB).copy(b, 2 * MiB);
  b.fill(0, 2 * MiB + 4096, 2 * MiB + 6144);
  b.fill(0, 2 * MiB + 65536, 2 * MiB + 65536 + 8192);
  // 3 MiB..5 MiB: zeros with a lone non-zero byte in the middle of a sector every 256 KiB.
  for (let o = 3 * MiB + 300; o < 5 * MiB; o += 256 * 1024) b[o] = 0x5a;
  pseudoRandom(13, MiB).copy(b, 5 * MiB);
  b[6 * MiB + 17] = 1; // the last sector
  return b;
}

/** Copy `src` to a new raw file; `prepare` may tamper with the opened source first. */
async function copyTo(
  src: string,
  format: 'raw' | 'qcow2',
  out: string,
  prepare: (dev: BlockDevice) => void,
): Promise<void> {
  await withNewRawTarget(src, format, out, async (source, target) => {
    prepare(source);
    await runCopy(rawCopyPlan(source, target), 0);
  });
}

const failReads = (dev: BlockDevice) => {
  dev.read = () => Promise.reject(new Error('read() used although the chunk was mapped'));
};

describe('convert copies data chunks from a mapping of the source file', () => {
  it.runIf(available)('raw source: content and sparse layout as with reads', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src.raw');
    const bytes = sourceBytes();
    writeFileSync(src, bytes);
    const mapped = join(dir, 'mapped.raw');
    const read = join(dir, 'read.raw');
    await copyTo(src, 'raw', mapped, failReads);
    // The same copy through read(): no file range, so nothing can be mapped.
    await copyTo(src, 'raw', read, (dev) => {
      dev.fileRange = () => undefined;
    });
    expect(readFileSync(mapped).equals(bytes)).toBe(true);
    expect(readFileSync(read).equals(bytes)).toBe(true);
    const runs = await rawLayout(mapped);
    expect(runs).toEqual(await rawLayout(read));
    expect(runs.length).toBeGreaterThan(3); // zero runs did become holes
  });

  it.runIf(available)('qcow2 source: data clusters are mapped from the image file', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src.qcow2');
    const bytes = sourceBytes();
    await createImage(src, { format: 'qcow2', size: bytes.length });
    const w = await openImage(src, { format: 'qcow2', readOnly: false });
    await w.write(bytes, 0);
    await w.close();
    const out = join(dir, 'out.raw');
    await copyTo(src, 'qcow2', out, failReads);
    expect(readFileSync(out).equals(bytes)).toBe(true);
  });

  it('a chunk that cannot be mapped is read', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src.raw');
    const bytes = sourceBytes();
    writeFileSync(src, bytes);
    const out = join(dir, 'out.raw');
    let reads = 0;
    await copyTo(src, 'raw', out, (dev) => {
      dev.fileRange = () => undefined;
      const read = dev.read.bind(dev);
      dev.read = (buf, offset) => {
        reads++;
        return read(buf, offset);
      };
    });
    expect(reads).toBeGreaterThan(0);
    expect(readFileSync(out).equals(bytes)).toBe(true);
  });
});
