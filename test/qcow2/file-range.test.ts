// Qcow2Device.fileRange (the zero-copy path of vmforge-nbd): for a read-only image, a run of
// plain data clusters maps to the host range whose bytes are the guest's; anything else
// (unallocated, zero, compressed, a run that is not contiguous in the file, a writable image)
// gives no range, so READ replies fall back to reading through the engine.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import type { BlockDevice } from '../../src/block/device.js';
import { openImage } from '../../src/image/open.js';
import { pseudoRandom, readAt } from '../support/imgops-matrix.js';
import { tempDir } from '../support/tmp.js';
import { describeWithTools } from '../support/tools.js';

const KiB = 1024;
const devices: BlockDevice[] = [];
afterEach(async () => {
  while (devices.length) await devices.pop()!.close();
});

/** 64 KiB clusters: 0-127 KiB data, 128-191 KiB written zeros, 192-255 KiB unallocated,
 * 256-383 KiB data written in reverse cluster order (not contiguous in the file). */
async function makeImage(dir: string): Promise<{ path: string; data: Buffer }> {
  const path = join(dir, 'disk.qcow2');
  const data = pseudoRandom(11, 512 * KiB);
  data.fill(0, 128 * KiB, 256 * KiB);
  execFileSync('qemu-img', ['create', '-f', 'qcow2', path, '512K'], { stdio: 'ignore' });
  const io = (cmd: string) => execFileSync('qemu-io', ['-f', 'qcow2', '-c', cmd, path]);
  const piece = join(dir, 'piece');
  const put = (off: number, len: number) => {
    writeFileSync(piece, data.subarray(off, off + len));
    io(`write -s ${piece} ${off} ${len}`);
  };
  put(0, 128 * KiB);
  io(`write -z ${128 * KiB} ${64 * KiB}`);
  put(320 * KiB, 64 * KiB);
  put(256 * KiB, 64 * KiB);
  return { path, data };
}

describeWithTools(['qemu-img', 'qemu-io'], 'Qcow2Device.fileRange', () => {
  it('maps plain data clusters of a read-only image to the host bytes, nothing else', async () => {
    const dir = await tempDir();
    const { path, data } = await makeImage(dir);
    const dev = await openImage(path, { format: 'qcow2', readOnly: true });
    devices.push(dev);
    for (const [off, len] of [
      [0, 1],
      [100, 128 * KiB - 100],
      [256 * KiB + 5, 1000],
      [320 * KiB, 64 * KiB],
    ] as const) {
      const r = await dev.fileRange!(off, len);
      expect(r, `${off}+${len}`).toBeDefined();
      expect(readAt(path, r!.offset, len).equals(data.subarray(off, off + len))).toBe(true);
    }
    // Written zeros, unallocated, a run across non-contiguous clusters, data into zeros.
    for (const [off, len] of [
      [128 * KiB, 4096],
      [200 * KiB, 4096],
      [256 * KiB, 128 * KiB],
      [120 * KiB, 16 * KiB],
      [0, 512 * KiB + 1],
    ] as const) {
      expect(await dev.fileRange!(off, len), `${off}+${len}`).toBeUndefined();
    }
  });

  it('gives no range for a writable image or compressed clusters', async () => {
    const dir = await tempDir();
    const { path } = await makeImage(dir);
    const rw = await openImage(path, { format: 'qcow2', readOnly: false });
    devices.push(rw);
    expect(await rw.fileRange!(0, 4096)).toBeUndefined();
    await rw.close();
    devices.pop();
    // Compressible bytes (random clusters would be stored uncompressed).
    const plain = join(dir, 'plain.raw');
    writeFileSync(plain, Buffer.alloc(128 * KiB, 'vmforge '));
    const comp = join(dir, 'comp.qcow2');
    execFileSync('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', plain, comp]);
    const map = execFileSync('qemu-img', ['map', '--output=json', comp], { encoding: 'utf8' });
    expect(map).not.toContain('"offset"'); // qemu-img 7.2 shows no host offset for compressed data
    const c = await openImage(comp, { format: 'qcow2', readOnly: true });
    devices.push(c);
    expect(await c.fileRange!(0, 4096)).toBeUndefined();
  });
});
