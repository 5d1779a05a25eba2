// Benchmark: `check` on a 1 TiB sparse image and a 4 GiB image with 65536 allocated 64 KiB
// clusters, vmforge (library, in-process) side by side with `qemu-img check` (process).
// Run: npm run build && node bench/check.mjs   (needs qemu-img and qemu-io; ~5 GiB in $TMPDIR)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkImage } from '../dist/img/check.js';

const dir = mkdtempSync(join(tmpdir(), 'vmforge-bench-check-'));
const sh = (cmd, args, input) =>
  execFileSync(cmd, args, { cwd: dir, input, stdio: ['pipe', 'ignore', 'inherit'] });

function make() {
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', 'sparse-1t.qcow2', '1T']);
  sh(
    'qemu-io',
    ['sparse-1t.qcow2'],
    'write -P 1 0 64k\nwrite -P 2 512G 64k\nwrite -P 3 1023G 1M\n',
  );
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', 'full-4g.qcow2', '4G']);
  const cmds = Array.from({ length: 16 }, (_, i) => `write -P 1 ${i * 256}M 256M`).join('\n');
  sh('qemu-io', ['full-4g.qcow2'], `${cmds}\n`);
}

async function time(fn, runs) {
  const samples = [];
  for (let i = 0; i < runs; i++) {
    const t = process.hrtime.bigint();
    await fn();
    samples.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)];
}

try {
  make();
  console.log('image            qemu-img check   vmforge checkImage   ratio (vmforge/qemu)');
  for (const name of ['sparse-1t.qcow2', 'full-4g.qcow2']) {
    const path = join(dir, name);
    const q = await time(() => execFileSync('qemu-img', ['check', path], { stdio: 'ignore' }), 9);
    const v = await time(async () => {
      const out = await checkImage(path);
      if (out.exitCode !== 0) throw new Error(`check failed: ${JSON.stringify(out)}`);
    }, 9);
    console.log(
      `${name.padEnd(17)}${q.toFixed(1).padStart(10)} ms${v.toFixed(1).padStart(16)} ms${(v / q).toFixed(2).padStart(17)}`,
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
