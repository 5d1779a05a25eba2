// Persistent bitmaps, side by side with QEMU: `bitmap` operations (open, load every bitmap, act,
// store on close), `convert --bitmaps`, and the cost of tracking writes: 256 MiB written in
// 64 KiB requests into an image with enabled bitmaps (64 KiB and 512-byte granularity) versus
// one without, by qemu-io and by vmforge's library. Run: npm run bench -- img-bitmap
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { report, root, sh, time, vmforgeImg } from './lib.mjs';

const dir = mkdtempSync(join(tmpdir(), 'vmforge-bench-bitmap-'));
const M = 1024 * 1024;
try {
  const base = join(dir, 'base.qcow2');
  sh(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '4G']);
  for (const [name, g] of [
    ['b0', '64k'],
    ['b1', '4k'],
    ['b2', '512'],
  ]) {
    sh(['qemu-img', 'bitmap', '--add', '-g', g, base, name]);
  }
  // Scattered writes so every bitmap has data clusters.
  const cmds = [];
  for (let i = 0; i < 200; i++) cmds.push('-c', `write ${(i * 20 + 3) * M} 64k`);
  sh(['qemu-io', ...cmds, base]);

  const rows = [];
  const img = join(dir, 'img.qcow2');
  const fresh = () => sh(['cp', '--sparse=always', base, img]);
  /** Median of 5 runs, each on a fresh copy of the image. */
  const op = (tool, args) => {
    const samples = [];
    for (let i = 0; i < 5; i++) {
      fresh();
      samples.push(time([...tool, ...args], { runs: 1 }));
    }
    return samples.sort((a, b) => a - b)[2];
  };
  for (const args of [
    ['bitmap', '--add', img, 'new'],
    ['bitmap', '--merge', 'b2', img, 'b0'],
    ['bitmap', '--clear', '--disable', img, 'b1'],
  ]) {
    rows.push({
      name: args.slice(0, -2).join(' '),
      peer: op(['qemu-img'], args),
      ours: op(vmforgeImg, args),
    });
  }
  const out = join(dir, 'out.qcow2');
  const convert = ['convert', '--bitmaps', '-O', 'qcow2', base, out];
  rows.push({
    name: 'convert --bitmaps (4 GiB, 13 MiB data)',
    peer: time(['qemu-img', ...convert], { runs: 3 }),
    ours: time([...vmforgeImg, ...convert], { runs: 3 }),
  });
  report(rows);

  // Tracking cost: the same writes with and without enabled bitmaps.
  const writer = join(dir, 'writer.mjs');
  writeFileSync(
    writer,
    `import { openImage } from ${JSON.stringify(`${root}dist/index.js`)};
const dev = await openImage(process.argv[2], { format: 'qcow2', readOnly: false });
const buf = new Uint8Array(65536).fill(7);
for (let off = 0; off < ${256 * M}; off += 65536) await dev.write(buf, off);
await dev.close();
`,
  );
  const plain = join(dir, 'plain.qcow2');
  const tracked = join(dir, 'tracked.qcow2');
  const prepare = (withBitmaps) => {
    const f = withBitmaps ? tracked : plain;
    sh(['qemu-img', 'create', '-q', '-f', 'qcow2', f, '1G']);
    if (withBitmaps) {
      sh(['qemu-img', 'bitmap', '--add', f, 'b64k']);
      sh(['qemu-img', 'bitmap', '--add', '-g', '512', f, 'b512']);
    }
    return f;
  };
  const writes = [];
  for (let off = 0; off < 256 * M; off += 65536) writes.push('-c', `write -P 7 ${off} 64k`);
  const qioWrites = (f) => ['qemu-io', '-f', 'qcow2', ...writes, f];
  const measure = (argvOf, withBitmaps) => {
    const samples = [];
    for (let i = 0; i < 3; i++) {
      const f = prepare(withBitmaps);
      samples.push(time(argvOf(f), { runs: 1 }));
    }
    return samples.sort((a, b) => a - b)[1];
  };
  const qPlain = measure((f) => qioWrites(f), false);
  const qTracked = measure((f) => qioWrites(f), true);
  const vPlain = measure((f) => [process.execPath, writer, f], false);
  const vTracked = measure((f) => [process.execPath, writer, f], true);
  console.log('\n256 MiB in 64 KiB writes: without bitmaps, with 2 enabled bitmaps');
  report(
    [
      { name: 'no bitmaps', peer: qPlain, ours: vPlain },
      { name: 'bitmaps (64k + 512 granularity)', peer: qTracked, ours: vTracked },
    ],
    'qemu-io',
  );
  console.log(
    `tracking overhead: qemu-io ${(qTracked / qPlain).toFixed(2)}x, vmforge ${(vTracked / vPlain).toFixed(2)}x`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
