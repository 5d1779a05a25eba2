// A dirty image (lazy refcounts, writer killed) opened read-write gets QEMU's automatic
// `check -r all` (qcow2_do_open), through openQcow2's repairDirty hook, and openImage installs
// that repair by default. Expected lines from qemu-iotests 039 and 060.

import { open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createImage, openImage } from '../../src/image/index.js';
import { dirtyImageRepair } from '../../src/qcow2/check/index.js';
import { openQcow2 } from '../../src/qcow2/open.js';
import { tempDir } from '../support/tmp.js';
import {
  check,
  FILENAME,
  poke,
  RB,
  readHeaderU64,
  RT,
  u16,
  u64,
  withData,
} from './check-helpers.js';

const DIRTY = 1n;

describe('dirty image repair on read-write open', () => {
  it('039: repairs the lost refcount, clears the dirty bit, keeps the data', async () => {
    const storage = await withData({ lazyRefcounts: true });
    // What a killed lazy-refcounts writer leaves: the data cluster's refcount never written.
    await poke(storage, RB + 2 * 5, u16(0));
    await poke(storage, 72, u64(DIRTY));
    const lines: string[] = [];
    const dev = await openQcow2(storage, {
      filename: FILENAME,
      readOnly: false,
      repairDirty: dirtyImageRepair((m) => lines.push(m.text)),
    });
    expect(lines).toEqual([
      'ERROR cluster 5 refcount=0 reference=1',
      'Rebuilding refcount structure',
      'Repairing cluster 1 refcount=1 reference=0',
      'Repairing cluster 2 refcount=1 reference=0',
    ]);
    expect((await readHeaderU64(storage, 72)) & DIRTY).toBe(0n);
    const buf = new Uint8Array(65536);
    await dev.read(buf, 0);
    expect(buf).toEqual(new Uint8Array(65536).fill(0x2a));
    // The device keeps working on the rebuilt refcount structure.
    await dev.write(new Uint8Array(65536).fill(7), 1 << 20);
    await dev.close();
    expect((await check(storage)).lines).toEqual([]);
  });

  it('060: a repair that cannot complete fails the open', async () => {
    const storage = await withData();
    await poke(storage, RT, u64(0xffff_2a00));
    await poke(storage, 72, u64(DIRTY));
    const lines: string[] = [];
    await expect(
      openQcow2(storage, {
        filename: FILENAME,
        readOnly: false,
        repairDirty: dirtyImageRepair((m) => lines.push(m.text)),
      }),
    ).rejects.toThrow('Could not repair dirty image: Input/output error');
    expect(lines.slice(0, 3)).toEqual([
      'ERROR refcount block 0 is not cluster aligned; refcount table entry corrupted',
      'qcow2: Marking image as corrupt: Refblock offset 0xffff2a00 unaligned (reftable index: 0); further corruption events will be suppressed',
      "Can't get refcount for cluster 0: Input/output error",
    ]);
    expect(lines.slice(-2)).toEqual([
      'Rebuilding refcount structure',
      'Repairing cluster 1 refcount=1 reference=0',
    ]);
  });

  it('openImage repairs by default and reports through onWarning', async () => {
    const dir = await tempDir();
    const path = join(dir, 'dirty.qcow2');
    await createImage(path, { format: 'qcow2', size: 64 << 20, lazyRefcounts: true });
    const w = await openImage(path, { readOnly: false });
    await w.write(new Uint8Array(4096).fill(9), 0);
    await w.close();
    const fh = await openFile(path, 'r+');
    await fh.write(u16(0), 0, 2, RB + 2 * 5); // data cluster refcount lost
    await fh.write(u64(DIRTY), 0, 8, 72);
    await fh.close();

    const warnings: string[] = [];
    const dev = await openImage(path, { readOnly: false, onWarning: (m) => warnings.push(m) });
    expect(warnings).toContain('Rebuilding refcount structure');
    const buf = new Uint8Array(4096);
    await dev.read(buf, 0);
    expect(buf).toEqual(new Uint8Array(4096).fill(9));
    await dev.close();

    // Read-only opens leave a dirty image alone (QEMU: only bdrv_is_writable images).
    const fh2 = await openFile(path, 'r+');
    await fh2.write(u64(DIRTY), 0, 8, 72);
    await fh2.close();
    const ro = await openImage(path);
    await ro.close();
    const hdr = new Uint8Array(8);
    const fh3 = await openFile(path, 'r');
    await fh3.read(hdr, 0, 8, 72);
    await fh3.close();
    expect(hdr[7]! & 1).toBe(1);
  });
});
