// Crash safety: a writer killed with SIGKILL at a random moment leaves an image that
// `qemu-img check` finds free of corruption (leaked clusters are acceptable, as in QEMU).
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { createImage, openImage, type CreateImageOptions } from '../../src/index.js';
import { describeWithTools } from '../support/tools.js';
import { run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';

const writer = fileURLToPath(new URL('../fixtures/bin/writer.mjs', import.meta.url));

/** Start the writer, wait until it has the image open, let it run `ms`, then SIGKILL it. */
function runAndKill(image: string, seed: number, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [writer, image, String(seed)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.once('data', () => setTimeout(() => child.kill('SIGKILL'), ms));
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve();
      else reject(new Error(`writer exited early (code ${code}): ${err}`));
    });
  });
}

const variants: { name: string; create: CreateImageOptions; backing?: boolean }[] = [
  { name: 'v3', create: {} },
  { name: 'v3 over a backing file', create: {}, backing: true },
  {
    name: 'extended L2 over a backing file',
    create: { extendedL2: true, clusterSize: 32768 },
    backing: true,
  },
  { name: 'v2, 4k clusters, refcount growth', create: { version: 2, clusterSize: 4096 } },
  { name: 'lazy refcounts', create: { lazyRefcounts: true } },
];

describeWithTools(['qemu-img'], 'killing a writer never corrupts the image', () => {
  it.each(variants)('$name', async (v) => {
    const dir = await tempDir();
    if (v.backing) {
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '32M']);
    }
    for (let round = 0; round < 6; round++) {
      const image = join(dir, `img-${round}.qcow2`);
      await createImage(image, {
        format: 'qcow2',
        size: 32 * 1024 * 1024,
        ...v.create,
        ...(v.backing ? { backingFile: 'base.qcow2', backingFormat: 'qcow2' } : {}),
      });
      // Kill at a spread of moments, the second run reopening the killed image (a dirty
      // lazy-refcounts image is reopened once its automatic repair exists: see the check tests).
      await runAndKill(image, round * 31 + 1, 40 + round * 70);
      if (!v.create.lazyRefcounts) await runAndKill(image, round * 31 + 2, 25 + round * 45);
      if (v.create.lazyRefcounts) {
        const info = JSON.parse(
          (await run('qemu-img', ['info', '--output=json', image])).stdout,
        ) as Record<string, unknown>;
        expect(info['dirty-flag']).toBe(true);
      }
      const check = await run('qemu-img', ['check', '--output=json', image]);
      const result = JSON.parse(check.stdout) as Record<string, number>;
      expect(result['corruptions'] ?? 0, check.stdout + check.stderr).toBe(0);
      expect(result['check-errors'], check.stdout + check.stderr).toBe(0);
      expect([0, 3]).toContain(check.code);
    }
  });

  it('a dirty lazy-refcounts image is repaired when vmforge opens it read-write', async () => {
    const dir = await tempDir();
    const image = join(dir, 'lazy.qcow2');
    await createImage(image, { format: 'qcow2', size: 32 * 1024 * 1024, lazyRefcounts: true });
    await runAndKill(image, 5, 150);
    const dev = await openImage(image, { readOnly: false });
    await dev.close();
    const info = JSON.parse(
      (await run('qemu-img', ['info', '--output=json', image])).stdout,
    ) as Record<string, unknown>;
    expect(info['dirty-flag']).toBe(false);
    const check = await run('qemu-img', ['check', image]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
  });
});
