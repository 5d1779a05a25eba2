// `vmforge-img check` (the built CLI, spawned) against `qemu-img check`: stdout byte for byte
// (human and JSON, the repair summary, -q), stderr with the tool name swapped, exit codes, and
// the usage errors. Needs `npm run build` first (npm test does it).

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { makeCorruptImage } from '../support/corrupt-images.js';
import { copyDir } from '../support/check-oracle.js';
import { run, runBin, type RunResult } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';

const IMAGES = [
  'leaked-cluster',
  'refcount-too-low',
  'l2-into-l1',
  'reftable-empty-with-data',
  'refblock-unaligned',
  'snapshot-offset-unaligned',
  'snapshot-extra-data-huge',
  'compressed-size-grown',
  'dirty-killed-writer',
  'corrupt-bit-leaked',
  'truncated-header',
  'backing-missing',
];

const VARIANTS: string[][] = [
  [],
  ['-r', 'leaks'],
  ['-r', 'all'],
  ['--output=json'],
  ['--output=json', '-r', 'all'],
  ['-q', '-r', 'all'],
];

/** qemu-img's words for what vmforge-img prints: only the tool name differs. */
const asQemu = (r: RunResult): RunResult => ({
  ...r,
  stderr: r.stderr.replaceAll('vmforge-img', 'qemu-img'),
});

describeWithTools(['qemu-img', 'qemu-io'], 'vmforge-img check vs qemu-img check', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vmforge-check-cli-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  async function both(dir: string, args: string[]): Promise<{ q: RunResult; v: RunResult }> {
    await copyDir(dir, `${dir}-q`);
    await copyDir(dir, `${dir}-v`);
    try {
      const q = await run('qemu-img', ['check', ...args], { cwd: `${dir}-q` });
      const v = asQemu(await runBin('vmforge-img', ['check', ...args], { cwd: `${dir}-v` }));
      return { q, v };
    } finally {
      await rm(`${dir}-q`, { recursive: true, force: true });
      await rm(`${dir}-v`, { recursive: true, force: true });
    }
  }

  for (const name of IMAGES) {
    it(name, { timeout: 90_000 }, async () => {
      const img = await makeCorruptImage(name, root);
      const dir = join(root, name);
      for (const variant of VARIANTS) {
        const { q, v } = await both(dir, [...variant, 't.qcow2']);
        expect(v, `${name} ${variant.join(' ')}`).toEqual(q);
      }
      expect(img.path).toContain(name);
    });
  }

  it(
    'a healthy image with compressed clusters: the statistics line',
    { timeout: 60_000 },
    async () => {
      const dir = join(root, 'healthy');
      await run('mkdir', ['-p', dir]);
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', 't.qcow2', '64M'], { cwd: dir });
      await run(
        'qemu-io',
        ['-f', 'qcow2', '-c', 'write -c -P 1 0 128k', '-c', 'write -P 2 8M 4k', 't.qcow2'],
        {
          cwd: dir,
        },
      );
      for (const variant of [[], ['--output', 'json'], ['-r', 'all']]) {
        const { q, v } = await both(dir, [...variant, 't.qcow2']);
        expect(v).toEqual(q);
        if (variant.length === 0) expect(v.stdout).toMatch(/% compressed clusters\n/);
      }
    },
  );

  it('raw images have no check (63), and usage errors match', { timeout: 60_000 }, async () => {
    const dir = join(root, 'usage');
    await run('mkdir', ['-p', dir]);
    await run('qemu-img', ['create', '-q', '-f', 'raw', 'r.raw', '1M'], { cwd: dir });
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', 't.qcow2', '1M'], { cwd: dir });
    const cases: string[][] = [
      ['-f', 'raw', 'r.raw'],
      ['--output=json', '-f', 'raw', 'r.raw'],
      ['-r', 'bogus', 't.qcow2'],
      ['--output=yaml', 't.qcow2'],
      ['-T', 'bogus', 't.qcow2'],
      ['t.qcow2', 'r.raw'],
      ['missing.qcow2'],
    ];
    for (const args of cases) {
      const { q, v } = await both(dir, args);
      expect(v.code, args.join(' ')).toBe(q.code);
      expect(v.stdout, args.join(' ')).toBe(q.stdout);
      // qemu-img's usage hint names its own --help; the first line must match exactly.
      expect(v.stderr.split('\n')[0], args.join(' ')).toBe(q.stderr.split('\n')[0]);
    }
  });
});
