// `check` on healthy images made by qemu-img and qemu-io (and by vmforge), against qemu-img 7.2:
// same JSON (allocation and fragmentation statistics included), no diagnostics, exit code 0,
// with and without -r leaks / -r all; a repair of a healthy image fixes nothing.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createImage, openImage } from '../../src/image/index.js';
import { copyDir, expectSameCheck, type Repair } from '../support/check-oracle.js';
import { run } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';

interface Healthy {
  name: string;
  /**
   * Result keys `qemu-img check` may see differently after the two repairs. Only for bitmaps:
   * QEMU rewrites persistent bitmaps (new clusters) whenever it closes an image it opened
   * read-write, so its repaired copy grows; vmforge's check leaves the bitmaps where they are.
   */
  ignoreAfterRepair?: string[];
  build(dir: string): Promise<void>;
}

async function tool(cmd: string, args: string[], cwd: string): Promise<void> {
  const r = await run(cmd, args, { cwd, timeoutMs: 60_000 });
  if (r.code !== 0 || /failed/.test(r.stdout)) {
    throw new Error(`${cmd} ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  }
}
const create = (dir: string, opts: string, size = '64M', extra: string[] = []) =>
  tool(
    'qemu-img',
    ['create', '-q', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), ...extra, 't.qcow2', size],
    dir,
  );
const io = (dir: string, cmds: string[], file = 't.qcow2') =>
  tool('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), file], dir);

/** Data at scattered and unaligned offsets, zeroed and discarded ranges. */
const SCATTERED = [
  'write -P 0x11 0 64k',
  'write -P 0x22 1000 3000',
  'write -P 0x33 5M 1M',
  'write -P 0x44 33M 4k',
  'write -z 5M 64k',
  'write -z -u 40M 1M',
  'discard 33M 64k',
  'write -P 0x55 63M 512',
];

const IMAGES: Healthy[] = [
  { name: 'v3-64k', build: async (d) => (await create(d, ''), io(d, SCATTERED)) },
  { name: 'v2-64k', build: async (d) => (await create(d, 'compat=0.10'), io(d, SCATTERED)) },
  ...[512, 4096, 2 * 1024 * 1024].map((cs) => ({
    name: `cluster-${cs}`,
    build: async (d: string) => (await create(d, `cluster_size=${cs}`), io(d, SCATTERED)),
  })),
  ...[1, 2, 4, 8, 32, 64].map((bits) => ({
    name: `refcount-bits-${bits}`,
    build: async (d: string) => (await create(d, `refcount_bits=${bits}`), io(d, SCATTERED)),
  })),
  {
    name: 'extended-l2',
    build: async (d) => {
      await create(d, 'extended_l2=on');
      await io(d, [...SCATTERED, 'write -P 0x66 2M 2k', 'write -z 2M 1k', 'discard 2M 64k']);
    },
  },
  {
    name: 'extended-l2-2M',
    build: async (d) => (await create(d, 'extended_l2=on,cluster_size=2M'), io(d, SCATTERED)),
  },
  {
    name: 'compressed-zlib',
    build: async (d) => {
      await create(d, 'compression_type=zlib');
      await io(d, ['write -c -P 0x11 0 64k', 'write -c -P 0x12 1M 256k', 'write -P 0x13 64k 64k']);
    },
  },
  {
    name: 'compressed-zstd',
    build: async (d) => {
      await create(d, 'compression_type=zstd');
      await io(d, ['write -c -P 0x21 0 64k', 'write -c -P 0x22 2M 192k', 'write -P 0x23 4M 8k']);
    },
  },
  {
    name: 'snapshots-v3',
    build: async (d) => {
      await create(d, '');
      await io(d, ['write -P 1 0 128k']);
      await tool('qemu-img', ['snapshot', '-c', 's1', 't.qcow2'], d);
      await io(d, ['write -P 2 64k 128k', 'write -P 3 10M 64k']);
      await tool('qemu-img', ['snapshot', '-c', 's2', 't.qcow2'], d);
      await io(d, ['write -P 4 0 4k', 'discard 10M 64k']);
      await tool('qemu-img', ['snapshot', '-c', 's3', 't.qcow2'], d);
      await tool('qemu-img', ['snapshot', '-d', 's2', 't.qcow2'], d);
    },
  },
  {
    name: 'snapshots-v2',
    build: async (d) => {
      await create(d, 'compat=0.10');
      await io(d, ['write -P 1 0 128k']);
      await tool('qemu-img', ['snapshot', '-c', 's1', 't.qcow2'], d);
      await io(d, ['write -P 2 64k 128k']);
    },
  },
  {
    name: 'bitmaps',
    ignoreAfterRepair: ['image-end-offset'],
    build: async (d) => {
      await create(d, '');
      await io(d, ['write -P 1 0 1M']);
      await tool('qemu-img', ['bitmap', '--add', 't.qcow2', 'b0'], d);
      await tool('qemu-img', ['bitmap', '--add', '-g', '512k', 't.qcow2', 'b1'], d);
      await tool('qemu-img', ['bitmap', '--disable', 't.qcow2', 'b1'], d);
    },
  },
  {
    name: 'data-file',
    // Data file names are opened as recorded, relative to the working directory: use an absolute
    // one so both tools find it (the copies share it; a check never writes the data file).
    build: async (d) => (await create(d, `data_file=${join(d, 't.data')}`), io(d, SCATTERED)),
  },
  {
    name: 'data-file-raw',
    build: async (d) => (
      await create(d, `data_file=${join(d, 't.data')},data_file_raw=on`),
      io(d, SCATTERED)
    ),
  },
  {
    name: 'backing-chain',
    build: async (d) => {
      await tool('qemu-img', ['create', '-q', '-f', 'raw', 'base.raw', '64M'], d);
      await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x01 0 8M', 'base.raw'], d);
      await tool(
        'qemu-img',
        ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', 'base.raw', 'mid.qcow2'],
        d,
      );
      await io(d, ['write -P 0x02 1M 1M', 'write -z 2M 64k'], 'mid.qcow2');
      await tool(
        'qemu-img',
        ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'mid.qcow2', 't.qcow2'],
        d,
      );
      await io(d, ['write -P 0x03 1500k 10k', 'discard 4M 1M']);
    },
  },
  {
    name: 'lazy-refcounts',
    build: async (d) => (await create(d, 'lazy_refcounts=on'), io(d, SCATTERED)),
  },
  ...['metadata', 'falloc', 'full'].map((p) => ({
    name: `prealloc-${p}`,
    build: async (d: string) => (
      await create(d, `preallocation=${p}`, '16M'),
      io(d, ['write -P 9 1M 1k'])
    ),
  })),
  {
    name: '1TiB-sparse',
    build: async (d) => {
      await create(d, '', '1T');
      await io(d, ['write -P 1 0 64k', 'write -P 2 512G 64k', 'write -P 3 1023G 1M']);
    },
  },
  {
    name: 'vmforge-written',
    build: async (d) => {
      const path = join(d, 't.qcow2');
      await createImage(path, { format: 'qcow2', size: 64 << 20, clusterSize: 4096 });
      const dev = await openImage(path, { readOnly: false });
      const buf = new Uint8Array(70_000).fill(0x5a);
      await dev.write(buf, 12345);
      await dev.write(buf.subarray(0, 4096), 40 << 20);
      await dev.writeZeroes(0, 8192, { mayUnmap: true });
      await dev.discard(40 << 20, 4096);
      await dev.close();
    },
  },
];

const MODES: Repair[] = [undefined, 'leaks', 'all'];

describeWithTools(['qemu-img', 'qemu-io'], 'check: healthy images vs qemu-img', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vmforge-check-matrix-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  for (const img of IMAGES) {
    it(img.name, { timeout: 90_000 }, async () => {
      const src = join(root, img.name);
      await run('mkdir', ['-p', src]);
      await img.build(src);
      for (const repair of MODES) {
        const label = `${img.name} [${repair ?? 'no repair'}]`;
        const q = join(root, `${img.name}-q`);
        const v = join(root, `${img.name}-v`);
        await copyDir(src, q);
        await copyDir(src, v);
        const { vmforge } = await expectSameCheck(
          join(q, 't.qcow2'),
          join(v, 't.qcow2'),
          repair,
          label,
          {
            ignoreAfterRepair: img.ignoreAfterRepair ?? [],
          },
        );
        expect(vmforge.exitCode, label).toBe(0);
        expect(vmforge.stderr, label).toEqual([]);
        expect(vmforge.json?.['leaks-fixed'], label).toBeUndefined();
        expect(vmforge.json?.['corruptions-fixed'], label).toBeUndefined();
        await rm(q, { recursive: true, force: true });
        await rm(v, { recursive: true, force: true });
      }
      await rm(src, { recursive: true, force: true });
    });
  }
});
