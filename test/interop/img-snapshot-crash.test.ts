// Crash safety of internal snapshots: a process looping over snapshot create / delete / apply
// (and guest writes that copy shared clusters) is killed with SIGKILL at random moments. What
// `qemu-img check` finds afterwards may only be harmless: leaked clusters, and QCOW_OFLAG_COPIED
// flags that disagree with a refcount in the safe direction (flag missing, or set on a cluster
// whose extra references are leaks) — the states QEMU itself can leave. Never a refcount below
// the number of references, never a COPIED flag on a cluster that is really shared. After
// `qemu-img check -r all` the image is clean and the guest content of the image and of every
// surviving snapshot is the original content.
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { dangerousFindings } from '../support/check-findings.js';
import { must, tool } from '../support/img-parity.js';
import { describeWithTools } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';

const worker = fileURLToPath(new URL('../fixtures/bin/snapshotter.mjs', import.meta.url));

function runAndKill(image: string, seed: number, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [worker, image, String(seed)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.once('data', () => setTimeout(() => child.kill('SIGKILL'), ms));
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve();
      else reject(new Error(`snapshot workload exited early (code ${code}): ${err}`));
    });
  });
}

const variants = [
  { name: 'v3 64k clusters', create: [] as string[], size: '8M' },
  {
    name: 'v3 4k clusters, refcount_bits=64, compressed data',
    create: ['-o', 'cluster_size=4k,refcount_bits=64'],
    size: '4M',
    compressed: true,
  },
];

describeWithTools(
  ['qemu-img', 'qemu-io'],
  'killing a snapshot workload never corrupts the image',
  () => {
    it.each(variants)('$name', async (v) => {
      const dir = await tempDir();
      const cs = v.create.some((c) => c.includes('cluster_size=4k')) ? 4096 : 65536;
      for (let round = 0; round < 6; round++) {
        const image = join(dir, `img-${round}.qcow2`);
        must(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', ...v.create, image, v.size]);
        const fill = v.compressed
          ? ['write -c -P 0x5a 0 1M', 'write -P 0x5b 1M 1M']
          : ['write -P 0x5a 0 3M', 'write -P 0x5b 5M 2M'];
        for (const c of fill) must(dir, 'qemu-io', ['-c', c, image]);
        must(dir, 'qemu-img', ['convert', '-O', 'raw', image, join(dir, 'original.raw')]);
        const original = readFileSync(join(dir, 'original.raw'));

        await runAndKill(image, round * 7 + 3, 30 + round * 90);
        await runAndKill(image, round * 7 + 4, 15 + round * 40);

        const found = tool(dir, 'qemu-img', ['check', image]);
        expect(
          dangerousFindings(found.stdout + found.stderr, cs),
          found.stdout + found.stderr,
        ).toEqual([]);

        const repaired = tool(dir, 'qemu-img', ['check', '-r', 'all', image]);
        expect([0, 3], repaired.stdout + repaired.stderr).toContain(repaired.code);
        const after = tool(dir, 'qemu-img', ['check', image]);
        expect(after.code, after.stdout + after.stderr).toBe(0);

        const ids =
          (
            JSON.parse(must(dir, 'qemu-img', ['info', '--output=json', image])) as {
              snapshots?: { id: string }[];
            }
          ).snapshots?.map((s) => s.id) ?? [];
        for (const id of [undefined, ...ids]) {
          const out = join(dir, 'check.raw');
          must(dir, 'qemu-img', [
            'convert',
            ...(id ? ['-l', `snapshot.id=${id}`] : []),
            '-O',
            'raw',
            image,
            out,
          ]);
          expect(readFileSync(out).equals(original), `content of ${id ?? 'the image'}`).toBe(true);
          rmSync(out);
        }
      }
    });
  },
);
