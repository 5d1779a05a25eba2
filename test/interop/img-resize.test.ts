// `vmforge-img resize` against `qemu-img resize` on copies of the same images: growing and
// shrinking (absolute and relative sizes), every preallocation mode, raw and qcow2 (v2/v3,
// cluster sizes, refcount widths, extended L2, compressed clusters, backing files larger than
// the image, internal snapshots, external data files), and the error paths. Results must agree
// in exit code, output, info JSON, guest content, snapshot content and `qemu-img check` (clean,
// same image end offset and allocation).
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { must, prepare, runBoth } from '../support/img-parity.js';
import { describeWithTools } from '../support/tools.js';

interface Variant {
  name: string;
  create: string[];
  io: string[];
  backing?: boolean;
  snapshot?: boolean;
  /** Resize operations (arguments after "resize"), each on a fresh copy. */
  ops: string[][];
}

const DATA = [
  'write -P 0x61 0 1M',
  'write -P 0x62 3M 1536k',
  'write -z 6M 512k',
  'write -P 0x63 7M 1M',
];
const GROW_SHRINK = [
  ['img.qcow2', '+5M'],
  ['--shrink', 'img.qcow2', '3584k'],
  ['--shrink', 'img.qcow2', '-1M'],
];

const variants: Variant[] = [
  {
    name: 'v3 64k: grow, shrink, preallocation',
    create: [],
    io: DATA,
    ops: [
      ...GROW_SHRINK,
      ['--preallocation=metadata', 'img.qcow2', '20M'],
      ['--preallocation=falloc', 'img.qcow2', '+3M'],
      ['--preallocation=full', 'img.qcow2', '12345k'],
      ['-q', 'img.qcow2', '1G'],
      ['--shrink', 'img.qcow2', '512'],
    ],
  },
  { name: 'v2', create: ['-o', 'compat=0.10'], io: DATA, ops: GROW_SHRINK },
  {
    name: '512 B clusters, refcount_bits=1',
    create: ['-o', 'cluster_size=512,refcount_bits=1'],
    io: DATA,
    ops: GROW_SHRINK,
  },
  { name: '2M clusters', create: ['-o', 'cluster_size=2M'], io: DATA, ops: GROW_SHRINK },
  {
    name: 'over a larger backing file (zeroes the new area)',
    create: [],
    io: ['write -P 0x64 0 1M'],
    backing: true,
    ops: [
      ['img.qcow2', '12M'],
      ['img.qcow2', '+1536k'],
      ['--preallocation=full', 'img.qcow2', '12M'],
      ['--preallocation=metadata', 'img.qcow2', '12M'],
      ['--shrink', 'img.qcow2', '4M'],
    ],
  },
  {
    name: 'extended L2 over a larger backing file',
    create: ['-o', 'extended_l2=on,cluster_size=32k'],
    io: ['write -P 0x65 0 100k'],
    backing: true,
    ops: [
      ['img.qcow2', '12345k'],
      ['--preallocation=falloc', 'img.qcow2', '12M'],
    ],
  },
  {
    name: 'v2 over a larger backing file (cannot zero)',
    create: ['-o', 'compat=0.10'],
    io: [],
    backing: true,
    ops: [['img.qcow2', '12M']],
  },
  {
    name: 'compressed clusters',
    create: [],
    io: ['write -c -P 0x66 0 4M', 'write -c -P 0x67 6M 1M'],
    ops: GROW_SHRINK,
  },
  { name: 'v3 with a snapshot', create: [], io: DATA, snapshot: true, ops: GROW_SHRINK },
  {
    name: 'v2 with a snapshot',
    create: ['-o', 'compat=0.10'],
    io: DATA,
    snapshot: true,
    ops: [GROW_SHRINK[0]!],
  },
  {
    name: 'external data file',
    create: ['-o', 'data_file=img.data'],
    io: DATA,
    ops: [
      ['img.qcow2', '+1M'],
      ['--shrink', 'img.qcow2', '2M'],
    ],
  },
];

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'vmforge-resize-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describeWithTools(['qemu-img', 'qemu-io'], 'resize matches qemu-img', () => {
  it.each(variants)('$name', async (v) => {
    const problems: string[] = [];
    for (const op of v.ops) {
      const dirs = prepare(join(root, v.name.replace(/\W+/g, '_')), (cwd) => {
        if (v.backing) {
          must(cwd, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '16M']);
          must(cwd, 'qemu-io', ['-c', 'write -P 0x42 0 16M', 'base.qcow2']);
        }
        const backing = v.backing ? ['-b', 'base.qcow2', '-F', 'qcow2'] : [];
        must(cwd, 'qemu-img', [
          'create',
          '-q',
          '-f',
          'qcow2',
          ...v.create,
          ...backing,
          'img.qcow2',
          '8M',
        ]);
        for (const c of v.io) must(cwd, 'qemu-io', ['-c', c, 'img.qcow2']);
        if (v.snapshot) {
          must(cwd, 'qemu-img', ['snapshot', '-c', 's', 'img.qcow2']);
          must(cwd, 'qemu-io', ['-c', 'write -P 0x68 3M 2M', 'img.qcow2']);
        }
      });
      // The data file is named relative to the working directory: compare what the tools say.
      const image = v.create.some((c) => c.includes('data_file')) ? 'absent' : 'img.qcow2';
      problems.push(...(await runBoth(dirs, ['resize', ...op], { image })));
      if (image === 'absent') {
        const size = (d: string) => statSync(join(d, 'img.data')).size;
        if (size(dirs.q) !== size(dirs.v))
          problems.push(`data file ${size(dirs.q)} vs ${size(dirs.v)}`);
        for (const d of [dirs.q, dirs.v]) must(d, 'qemu-img', ['check', 'img.qcow2']);
        const cmp = must(dirs.q, 'qemu-img', ['compare', 'img.qcow2', join(dirs.v, 'img.qcow2')]);
        expect(cmp).toContain('identical');
      }
    }
    expect(problems).toEqual([]);
  });

  it('raw images: exact sizes, preallocation as file-posix', async () => {
    const problems: string[] = [];
    const ops: string[][] = [
      ['-f', 'raw', 'disk.raw', '+1'],
      ['-f', 'raw', 'disk.raw', '3M'],
      ['-f', 'raw', '--shrink', 'disk.raw', '100001'],
      ['-f', 'raw', '--preallocation=falloc', 'disk.raw', '2M'],
      ['-f', 'raw', '--preallocation=full', 'disk.raw', '+1536k'],
      ['-f', 'raw', '--preallocation=metadata', 'disk.raw', '2M'],
      ['disk.raw', '2M'],
      ['empty.raw', '1M'],
    ];
    for (const op of ops) {
      const dirs = prepare(join(root, 'raw'), (cwd) => {
        const b = Buffer.alloc(1_000_000);
        for (let i = 0; i < b.length; i += 4096) b[i] = i & 0xff;
        writeFileSync(join(cwd, 'disk.raw'), b);
        writeFileSync(join(cwd, 'empty.raw'), Buffer.alloc(0));
      });
      const image = op.includes('empty.raw') ? 'empty.raw' : 'disk.raw';
      problems.push(...(await runBoth(dirs, ['resize', ...op], { image })));
      const size = (d: string) => statSync(join(d, image)).size;
      if (size(dirs.q) !== size(dirs.v))
        problems.push(`${op.join(' ')}: file ${size(dirs.q)} vs ${size(dirs.v)}`);
    }
    expect(problems).toEqual([]);
  });

  it('fails like qemu-img', async () => {
    const dirs = prepare(join(root, 'errors'), (cwd) => {
      must(cwd, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'img.qcow2', '8M']);
      must(cwd, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'bm.qcow2', '8M']);
      must(cwd, 'qemu-img', ['bitmap', '--add', 'bm.qcow2', 'b0']);
    });
    const cases: string[][] = [
      ['img.qcow2', '-1G'],
      ['img.qcow2', '-4M'],
      ['img.qcow2', '1000'],
      ['img.qcow2', '0'],
      ['img.qcow2', '+1x'],
      ['img.qcow2', '--shrink'],
      ['img.qcow2'],
      ['--shrink', 'img.qcow2', '1000'],
      ['--preallocation=full', 'img.qcow2', '4M'],
      ['--preallocation=foo', 'img.qcow2', '16M'],
      ['-z', 'img.qcow2', '1M'],
      ['img.qcow2', '-1M', '-q'],
      ['img.qcow2', 'other', '1M'],
      ['-f', 'qcow2', 'missing.qcow2', '1M'],
      ['img.qcow2', '1E'],
      ['img.qcow2', '-f'],
    ];
    const problems: string[] = [];
    for (const args of cases)
      problems.push(...(await runBoth(dirs, ['resize', ...args], { image: 'img.qcow2' })));
    expect(problems).toEqual([]);
  });
});
