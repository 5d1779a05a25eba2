// FileStorage.close() syncs what was written since the last sync, as bdrv_close() flushes
// (cache=writeback and writethrough), and nothing else: not a file that was only opened, not
// one already synced, never with cache=unsafe. Also the creations that must not sync (raw, as
// QEMU's raw create) and the one that must (raw preallocation=full, which QEMU fsyncs whatever
// the cache mode), and the qemu-nbd -s overlay, which is thrown away.
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FileStorage } from '../../src/block/file-storage.js';
import { createImage } from '../../src/image/create.js';
import { openImage } from '../../src/image/open.js';
import { OverlayDevice } from '../../src/nbd/overlay-device.js';
import { openExportImage } from '../../src/cli/nbd/open-image.js';
import { tempDir } from '../support/tmp.js';

afterEach(() => vi.restoreAllMocks());

/** A spy on FileHandle.prototype.datasync, which every FileStorage sync goes through. */
async function spyDatasync(dir: string) {
  const fh = await open(join(dir, 'probe'), 'w');
  await fh.close();
  return vi.spyOn(Object.getPrototypeOf(fh) as { datasync(): Promise<void> }, 'datasync');
}

describe('FileStorage.close() and syncs', () => {
  it('syncs at close only what was changed since the last sync, unless cache=unsafe', async () => {
    const dir = await tempDir();
    const datasync = await spyDatasync(dir);
    const path = join(dir, 'f');

    await (await FileStorage.open(path, { create: true })).close(); // created, never changed
    expect(datasync).toHaveBeenCalledTimes(0);

    let s = await FileStorage.open(path, { readOnly: false });
    await s.write(new Uint8Array(4096).fill(1), 0);
    await s.close();
    expect(datasync).toHaveBeenCalledTimes(1);

    s = await FileStorage.open(path, { readOnly: false });
    await s.write(new Uint8Array(512).fill(2), 0);
    await s.flush();
    await s.close(); // nothing since the flush
    expect(datasync).toHaveBeenCalledTimes(2);

    s = await FileStorage.open(path, { readOnly: false });
    await s.truncate(8192);
    await s.close();
    expect(datasync).toHaveBeenCalledTimes(3);

    s = await FileStorage.open(path, { readOnly: false, cache: 'writethrough' });
    await s.write(new Uint8Array(512).fill(3), 0); // synced by the write itself
    await s.close();
    expect(datasync).toHaveBeenCalledTimes(4);

    s = await FileStorage.open(path, { readOnly: false, cache: 'unsafe' });
    await s.write(new Uint8Array(512).fill(4), 0);
    await s.flush();
    await s.close();
    expect(datasync).toHaveBeenCalledTimes(4);
  });

  it('raw create does not sync; raw preallocation=full does; qcow2 create does, once per flush', async () => {
    const dir = await tempDir();
    const datasync = await spyDatasync(dir);
    await createImage(join(dir, 'a.raw'), { format: 'raw', size: 1 << 20 });
    await createImage(join(dir, 'b.raw'), {
      format: 'raw',
      size: 1 << 20,
      preallocation: 'falloc',
    });
    expect(datasync).toHaveBeenCalledTimes(0);
    await createImage(join(dir, 'c.raw'), { format: 'raw', size: 1 << 20, preallocation: 'full' });
    expect(datasync).toHaveBeenCalledTimes(1);
    datasync.mockClear();
    await createImage(join(dir, 'd.qcow2'), { format: 'qcow2', size: 1 << 20 });
    expect(datasync.mock.calls.length).toBeGreaterThanOrEqual(1);
    datasync.mockClear();
    await createImage(join(dir, 'e.qcow2'), { format: 'qcow2', size: 1 << 20, cache: 'unsafe' });
    expect(datasync).toHaveBeenCalledTimes(0);
  });

  it('the qemu-nbd -s overlay is never synced, and closing it closes its base', async () => {
    const dir = await tempDir();
    const base = join(dir, 'base.raw');
    await createImage(base, { format: 'raw', size: 1 << 20 });
    const datasync = await spyDatasync(dir);
    const device = await openImage(base, { format: 'raw', readOnly: true });
    const overlay = await OverlayDevice.create(device, dir);
    await overlay.write(new Uint8Array(65536).fill(9), 0);
    const closeBase = vi.spyOn(device, 'close');
    await overlay.close();
    expect(datasync).toHaveBeenCalledTimes(0);
    expect(closeBase).toHaveBeenCalledTimes(1);
  });

  it('an export with --cache=unsafe is not synced when it closes; with writeback it is', async () => {
    const dir = await tempDir();
    const path = join(dir, 'export.raw');
    await createImage(path, { format: 'raw', size: 1 << 20 });
    const datasync = await spyDatasync(dir);
    for (const cache of ['unsafe', 'writeback'] as const) {
      const { device } = await openExportImage(path, {
        format: 'raw',
        readOnly: false,
        snapshot: false,
        cache,
      });
      await device.write(new Uint8Array(4096).fill(5), 0);
      await device.close();
      expect(datasync).toHaveBeenCalledTimes(cache === 'unsafe' ? 0 : 1);
    }
  });
});
