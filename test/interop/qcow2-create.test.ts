// Images created by vmforge are byte-identical to qemu-img 7.2's for the same options, pass
// `qemu-img check` with no errors or leaks, and `qemu-img info --output=json` agrees.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { createImage, type CreateImageOptions } from '../../src/index.js';
import { describeWithTools } from '../support/tools.js';
import { run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';
import { filesEqual } from '../support/files.js';

interface Case {
  name: string;
  size: string;
  qemuOptions: string[];
  vmforge: CreateImageOptions;
}

const M = 1024 * 1024;
const G = 1024 * M;
const cases: Case[] = [
  { name: 'default 64M', size: '64M', qemuOptions: [], vmforge: { size: 64 * M } },
  {
    name: 'compat=0.10',
    size: '1M',
    qemuOptions: ['-o', 'compat=0.10'],
    vmforge: { size: M, version: 2 },
  },
  {
    name: '512 B clusters, refcount_bits=1',
    size: '16M',
    qemuOptions: ['-o', 'cluster_size=512,refcount_bits=1'],
    vmforge: { size: 16 * M, clusterSize: 512, refcountBits: 1 },
  },
  {
    name: '2 MiB clusters, refcount_bits=64',
    size: '1G',
    qemuOptions: ['-o', 'cluster_size=2M,refcount_bits=64'],
    vmforge: { size: G, clusterSize: 2 * M, refcountBits: 64 },
  },
  {
    name: 'refcount_bits=2,4,8,32',
    size: '1G',
    qemuOptions: ['-o', 'refcount_bits=8,cluster_size=4k'],
    vmforge: { size: G, refcountBits: 8, clusterSize: 4096 },
  },
  {
    name: 'lazy_refcounts',
    size: '1G',
    qemuOptions: ['-o', 'lazy_refcounts=on'],
    vmforge: { size: G, lazyRefcounts: true },
  },
  {
    name: 'extended_l2 + zstd',
    size: '1G',
    qemuOptions: ['-o', 'extended_l2=on,compression_type=zstd'],
    vmforge: { size: G, extendedL2: true, compressionType: 'zstd' },
  },
  { name: '1 TiB', size: '1T', qemuOptions: [], vmforge: { size: 1024 * G } },
  { name: '16 TiB', size: '16T', qemuOptions: [], vmforge: { size: 16 * 1024 * G } },
  {
    name: 'preallocation=metadata',
    size: '1G',
    qemuOptions: ['-o', 'preallocation=metadata'],
    vmforge: { size: G, preallocation: 'metadata' },
  },
  {
    name: 'preallocation=metadata, 512 B clusters (refblock and reftable growth)',
    size: '64M',
    qemuOptions: ['-o', 'preallocation=metadata,cluster_size=512'],
    vmforge: { size: 64 * M, preallocation: 'metadata', clusterSize: 512 },
  },
  {
    name: 'preallocation=falloc, 1k clusters (reftable growth)',
    size: '40M',
    qemuOptions: ['-o', 'preallocation=falloc,cluster_size=1k'],
    vmforge: { size: 40 * M, preallocation: 'falloc', clusterSize: 1024 },
  },
  {
    name: 'preallocation=falloc',
    size: '5M',
    qemuOptions: ['-o', 'preallocation=falloc'],
    vmforge: { size: 5 * M, preallocation: 'falloc' },
  },
  {
    name: 'preallocation=full',
    size: '3M',
    qemuOptions: ['-o', 'preallocation=full'],
    vmforge: { size: 3 * M, preallocation: 'full' },
  },
  { name: 'unaligned size rounds up', size: '1000', qemuOptions: [], vmforge: { size: 1000 } },
  {
    name: 'ext l2 + metadata prealloc + backing',
    size: '4M',
    qemuOptions: ['-o', 'extended_l2=on,preallocation=metadata', '-b', 'base.qcow2', '-F', 'qcow2'],
    vmforge: {
      size: 4 * M,
      extendedL2: true,
      preallocation: 'metadata',
      backingFile: 'base.qcow2',
      backingFormat: 'qcow2',
    },
  },
  {
    name: 'backing file',
    size: '64M',
    qemuOptions: ['-b', 'base.qcow2', '-F', 'qcow2'],
    vmforge: { size: 64 * M, backingFile: 'base.qcow2', backingFormat: 'qcow2' },
  },
  {
    name: 'raw backing file, v2',
    size: '64M',
    qemuOptions: ['-o', 'compat=0.10', '-b', 'base.raw', '-F', 'raw'],
    vmforge: { size: 64 * M, version: 2, backingFile: 'base.raw', backingFormat: 'raw' },
  },
];

describeWithTools(['qemu-img'], 'qcow2 create matches qemu-img 7.2', () => {
  it.each(cases)('$name', async (c) => {
    const dir = await tempDir();
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '64M']);
    await run('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'base.raw'), '64M']);
    const ref = join(dir, 'ref.qcow2');
    const ours = join(dir, 'ours.qcow2');
    const q = await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...c.qemuOptions, ref, c.size]);
    expect(q.code, q.stderr).toBe(0);
    await createImage(ours, { format: 'qcow2', ...c.vmforge });

    expect(await filesEqual(ref, ours)).toBe(true);

    const check = await run('qemu-img', ['check', '--output=json', ours]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    const result = JSON.parse(check.stdout) as Record<string, number>;
    expect(result['corruptions'] ?? 0).toBe(0);
    expect(result['leaks'] ?? 0).toBe(0);
    expect(result['check-errors']).toBe(0);

    const infoRef = JSON.parse(
      (await run('qemu-img', ['info', '--output=json', ref])).stdout,
    ) as Record<string, unknown>;
    const infoOurs = JSON.parse(
      (await run('qemu-img', ['info', '--output=json', ours])).stdout,
    ) as Record<string, unknown>;
    for (const info of [infoRef, infoOurs]) {
      delete info['filename'];
      delete info['actual-size'];
    }
    expect(infoOurs).toEqual(infoRef);
  });

  it('external data file (data_file_raw)', async () => {
    const dir = await tempDir();
    // QEMU records the data file name as given and opens it relative to the working directory.
    const q = await run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      `data_file=${join(dir, 'ref.data')},data_file_raw=on`,
      join(dir, 'ref.qcow2'),
      '8M',
    ]);
    expect(q.code, q.stderr).toBe(0);
    await createImage(join(dir, 'ours.qcow2'), {
      format: 'qcow2',
      size: 8 * M,
      dataFile: join(dir, 'our.data'),
      dataFileRaw: true,
    });
    const [a, b] = await Promise.all([
      readFile(join(dir, 'ref.qcow2')),
      readFile(join(dir, 'ours.qcow2')),
    ]);
    // Only the recorded data file name differs.
    expect(b.length).toBe(a.length);
    expect(Buffer.from(b).toString('latin1').replace('our.data', 'ref.data')).toBe(
      Buffer.from(a).toString('latin1'),
    );
    const chk = await run('qemu-img', ['check', join(dir, 'ours.qcow2')]);
    expect(chk.code, chk.stdout + chk.stderr).toBe(0);
    expect((await readFile(join(dir, 'our.data'))).length).toBe(
      (await readFile(join(dir, 'ref.data'))).length,
    );
  });

  it('raw images: preallocation off/falloc/full have the same size and content as qemu-img', async () => {
    const dir = await tempDir();
    for (const prealloc of ['off', 'falloc', 'full'] as const) {
      const ref = join(dir, `ref-${prealloc}.raw`);
      const ours = join(dir, `ours-${prealloc}.raw`);
      await run('qemu-img', [
        'create',
        '-q',
        '-f',
        'raw',
        '-o',
        `preallocation=${prealloc}`,
        ref,
        '3M',
      ]);
      await createImage(ours, { format: 'raw', size: 3 * M, preallocation: prealloc });
      expect(Buffer.compare(await readFile(ref), await readFile(ours))).toBe(0);
      const mapRef = (await run('qemu-img', ['map', '--output=json', '-f', 'raw', ref])).stdout;
      const mapOurs = (await run('qemu-img', ['map', '--output=json', '-f', 'raw', ours])).stdout;
      expect(mapOurs).toBe(mapRef);
    }
  });
});
