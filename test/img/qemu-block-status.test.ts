// The BDRV_BLOCK_* words compare -s compares, and -l snapshot loading, on engine-made images.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createImage, isQcow2, openImage } from '../../src/image/index.js';
import {
  BDRV_BLOCK_ALLOCATED as A,
  BDRV_BLOCK_DATA as D,
  BDRV_BLOCK_EOF as EOF,
  BDRV_BLOCK_OFFSET_VALID as OV,
  BDRV_BLOCK_ZERO as Z,
  blockStatusAbove,
  qemuLength,
  readQemu,
} from '../../src/img/qemu-block-status.js';
import { loadSnapshotTmp, parseSnapshotParam } from '../../src/img/snapshot-param.js';
import { tempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;

describe('blockStatusAbove', () => {
  it('gives qcow2 and backing-chain flag words as QEMU does', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'base.raw'), Buffer.alloc(2 * MiB, 1));
    const top = join(dir, 'top.qcow2');
    await createImage(top, {
      format: 'qcow2',
      size: 4 * MiB,
      backingFile: 'base.raw',
      backingFormat: 'raw',
    });
    const w = await openImage(top, { readOnly: false });
    await w.write(new Uint8Array(65536).fill(2), 0);
    await w.writeZeroes(MiB, 65536);
    await w.close();
    const dev = await openImage(top);
    try {
      expect(await blockStatusAbove(dev, 0, dev.size)).toEqual({ flags: D | OV | A, pnum: 65536 });
      // from the raw base: allocated data at depth 1
      expect((await blockStatusAbove(dev, 65536, dev.size - 65536)).flags).toBe(D | OV | A);
      expect(await blockStatusAbove(dev, MiB, 65536)).toEqual({ flags: Z | A, pnum: 65536 });
      // beyond the backing file's end: "allocated" zeros (bdrv_co_common_block_status_above)
      const beyond = await blockStatusAbove(dev, 3 * MiB, MiB);
      expect(beyond.flags).toBe(Z | A | EOF);
    } finally {
      await dev.close();
    }
  });

  it('rounds raw lengths up to whole sectors and reads the tail as zeros', async () => {
    const dir = await tempDir();
    const file = join(dir, 'odd.raw');
    await writeFile(file, Buffer.alloc(1000, 5));
    const dev = await openImage(file, { format: 'raw' });
    try {
      expect(qemuLength(dev)).toBe(1024);
      const first = await blockStatusAbove(dev, 0, 1024);
      expect(first.pnum).toBeLessThanOrEqual(1000);
      expect(await blockStatusAbove(dev, 1000, 24)).toEqual({ flags: Z | OV | A | EOF, pnum: 24 });
      const buf = new Uint8Array(1024).fill(9);
      await readQemu(dev, buf, 0);
      expect(buf[999]).toBe(5);
      expect(buf.subarray(1000).every((b) => b === 0)).toBe(true);
    } finally {
      await dev.close();
    }
  });
});

describe('-l snapshot_param', () => {
  it('parses the two forms', () => {
    expect(parseSnapshotParam('first')).toEqual({ idOrName: 'first' });
    expect(parseSnapshotParam('snapshot.id=1,snapshot.name=a,,b')).toEqual({
      id: '1',
      name: 'a,b',
    });
    const warnings: string[] = [];
    expect(() => parseSnapshotParam('snapshot.id=1,x', (w) => warnings.push(w))).toThrow(
      "Invalid parameter 'x'",
    );
    expect(warnings).toEqual([
      "warning: short-form boolean option 'x' deprecated\nPlease use x=on instead",
    ]);
    expect(() => parseSnapshotParam('snapshot.id=1,help')).toThrow(
      expect.objectContaining({ help: expect.stringMatching(/^snapshot options:\n/) }),
    );
  });

  it('loads a snapshot view and refuses what QEMU refuses', async () => {
    const dir = await tempDir();
    const raw = join(dir, 'r.raw');
    await writeFile(raw, Buffer.alloc(4096));
    const rawDev = await openImage(raw);
    await expect(loadSnapshotTmp(rawDev, { idOrName: 'x' })).rejects.toThrow(
      "Block format 'raw' used by device '' does not support temporarily loading internal snapshots",
    );
    await rawDev.close();
    const q = join(dir, 'q.qcow2');
    await createImage(q, { format: 'qcow2', size: MiB });
    const dev = await openImage(q);
    try {
      expect(isQcow2(dev)).toBe(true);
      await expect(loadSnapshotTmp(dev, { idOrName: 'none' })).rejects.toThrow(
        "Can't find snapshot",
      );
      await expect(loadSnapshotTmp(dev, {})).rejects.toThrow('snapshot_id and name are both NULL');
    } finally {
      await dev.close();
    }
  });
});
