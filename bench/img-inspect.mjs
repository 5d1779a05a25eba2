// info, map --output=json and check on a 1 TiB sparse image and on a 4 GiB image with 64k
// allocated clusters, vmforge-img against qemu-img 7.2 in the same run. Prints median wall times
// (process start included: that is what a script calling the tool pays) and ratios.
import { mkdtempSync, rmSync, openSync, writeSync, closeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { report, sh, time, vmforgeImg } from './lib.mjs';

const dir = mkdtempSync(join(tmpdir(), 'vmforge-bench-'));
try {
  const sparse = join(dir, 'sparse-1T.qcow2');
  sh(['qemu-img', 'create', '-q', '-f', 'qcow2', sparse, '1T']);
  const full = join(dir, 'alloc-4G.qcow2');
  sh(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', full, '4G']);
  // Every other cluster allocated: map has to emit an entry per cluster (32k entries).
  const raw = join(dir, 'striped.raw');
  const fd = openSync(raw, 'w');
  ftruncateSync(fd, 4 * 2 ** 30);
  const one = Buffer.from([1]);
  for (let off = 0; off < 4 * 2 ** 30; off += 2 * 65536) writeSync(fd, one, 0, 1, off);
  closeSync(fd);
  const striped = join(dir, 'striped-4G.qcow2');
  sh(['qemu-img', 'convert', '-O', 'qcow2', raw, striped]);
  rmSync(raw);

  const rows = [];
  for (const [label, image] of [
    ['1 TiB sparse', sparse],
    ['4 GiB, 64k clusters allocated', full],
    ['4 GiB, 32k clusters allocated, striped', striped],
  ]) {
    for (const args of [
      ['info', '--output=json'],
      ['map', '--output=json'],
      ['check', '--output=json'],
    ]) {
      const peer = time(['qemu-img', ...args, image]);
      const ours = time([...vmforgeImg, ...args, image]);
      rows.push({ name: `${args[0]} ${label}`, peer, ours });
    }
  }
  report(rows);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
