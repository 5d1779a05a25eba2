// compare: vmforge-img against qemu-img 7.2 in the same run, on
//   - two identical 1 GiB raw files of random data (every byte is read and compared),
//   - a 1 GiB random raw file against its qcow2 conversion,
//   - two sparse 1 TiB qcow2 images with a little data (block status does the work),
//   - two identical 1 GiB raw files differing in their last byte.
// Median wall time of 5 runs each (process start included: what a script calling the tool
// pays), the two tools alternating, files in the page cache. Prints ratios (vmforge / qemu-img).
// Run: npm run bench -- img-compare   (needs ~4 GiB free in the temp directory)
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { report, sh, vmforgeImg } from './lib.mjs';

/** One timed run (ms); the exit status must be `code` (compare exits 1 on a difference). */
function once(argv, code) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== code) throw new Error(`${argv.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return ms;
}

/** Median of `runs` alternating runs of both tools. */
function sideBySide(peerArgv, oursArgv, code, runs = 5) {
  const peer = [];
  const ours = [];
  for (let i = 0; i < runs; i++) {
    peer.push(once(peerArgv, code));
    ours.push(once(oursArgv, code));
  }
  const median = (xs) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  return { peer: median(peer), ours: median(ours) };
}

const GiB = 1024 ** 3;
const dir = mkdtempSync(join(tmpdir(), 'vmforge-bench-compare-'));
try {
  const a = join(dir, 'random-a.raw');
  const fd = openSync(a, 'w');
  const chunk = Buffer.alloc(16 * 1024 * 1024);
  for (let pos = 0; pos < GiB; pos += chunk.length) {
    randomFillSync(chunk);
    writeSync(fd, chunk, 0, chunk.length, pos);
  }
  closeSync(fd);
  const b = join(dir, 'random-b.raw');
  sh(['cp', a, b]);
  const q = join(dir, 'random.qcow2');
  sh(['qemu-img', 'convert', '-O', 'qcow2', a, q]);
  const last = join(dir, 'random-last.raw');
  sh(['cp', a, last]);
  const lfd = openSync(last, 'r+');
  writeSync(lfd, Buffer.from([0x5a]), 0, 1, GiB - 1);
  closeSync(lfd);

  const t1 = join(dir, 'sparse-1T-a.qcow2');
  sh(['qemu-img', 'create', '-q', '-f', 'qcow2', t1, '1T']);
  for (const [off, len] of [
    ['0', '1M'],
    ['300G', '64k'],
    ['700G', '4M'],
    ['1023G', '1M'],
  ]) {
    sh(['qemu-io', '-f', 'qcow2', '-c', `write -P 7 ${off} ${len}`, t1]);
  }
  const t2 = join(dir, 'sparse-1T-b.qcow2');
  sh(['qemu-img', 'convert', '-O', 'qcow2', t1, t2]);

  // Warm the page cache once.
  for (const f of [a, b, q, last]) spawnSync('cat', [f], { stdio: 'ignore' });

  const rows = [];
  for (const [name, args, code] of [
    ['1 GiB random raw, identical', [a, b], 0],
    ['1 GiB random raw vs qcow2', [a, q], 0],
    ['1 GiB random raw, last byte differs', [a, last], 1],
    ['1 TiB sparse qcow2 pair', [t1, t2], 0],
  ]) {
    rows.push({
      name,
      ...sideBySide(['qemu-img', 'compare', ...args], [...vmforgeImg, 'compare', ...args], code),
    });
  }
  report(rows);

  // Where vmforge's time goes: the same comparisons as library calls in this process (no Node
  // start-up or module loading), best of 3.
  const { openImage } = await import('../dist/image/index.js');
  const { compareImages } = await import('../dist/img/compare.js');
  console.log('\nlibrary call (compareImages, in-process), best of 3:');
  for (const [name, [x, y]] of [
    ['1 GiB random raw, identical', [a, b]],
    ['1 GiB random raw vs qcow2', [a, q]],
    ['1 TiB sparse qcow2 pair', [t1, t2]],
  ]) {
    const d1 = await openImage(x);
    const d2 = await openImage(y);
    let best = Infinity;
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      await compareImages(d1, d2);
      best = Math.min(best, performance.now() - t0);
    }
    await d1.close();
    await d2.close();
    console.log(`  ${name.padEnd(36)} ${best.toFixed(1).padStart(8)}ms`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
