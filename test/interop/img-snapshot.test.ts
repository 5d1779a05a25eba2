// `vmforge-img snapshot -c/-a/-d/-l` against `qemu-img snapshot` on copies of the same images:
// a matrix of qcow2 variants (v2/v3, cluster sizes, refcount widths, extended L2, compressed
// clusters, a backing file, snapshots made by qemu-img) goes through the same sequence of
// create / write / create / apply / delete with both tools; after every step the results must
// agree (exit code, output, info JSON, guest content of the image and of each snapshot,
// `qemu-img check` clean with the same layout). Error cases compare messages and exit codes.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWithTools } from '../support/tools.js';
import { must, prepare, runBoth, tool, vmforgeImg } from '../support/img-parity.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

interface Variant {
  name: string;
  create: string[];
  /** qemu-io commands run on the image before the sequence. */
  io: string[];
  backing?: boolean;
  /** Snapshots made by qemu-img before the sequence. */
  snapshots?: string[];
}

const DATA = ['write -P 0x61 0 1M', 'write -P 0x62 3M 1536k', 'write -z 5M 256k'];

const variants: Variant[] = [
  { name: 'v3 64k', create: [], io: DATA },
  { name: 'v2 (compat=0.10)', create: ['-o', 'compat=0.10'], io: DATA },
  {
    name: 'v3 512 B clusters, refcount_bits=1',
    create: ['-o', 'cluster_size=512,refcount_bits=1'],
    io: DATA,
  },
  {
    name: 'v3 4k clusters, refcount_bits=64',
    create: ['-o', 'cluster_size=4k,refcount_bits=64'],
    io: DATA,
  },
  {
    name: 'extended L2 over a backing file',
    create: ['-o', 'extended_l2=on'],
    io: DATA,
    backing: true,
  },
  {
    name: 'compressed clusters',
    create: [],
    io: ['write -c -P 0x63 0 2M', 'write -P 0x64 4M 64k'],
  },
  {
    name: 'zstd compressed clusters',
    create: ['-o', 'compression_type=zstd'],
    io: ['write -c -P 0x65 1M 1M'],
  },
  { name: 'lazy refcounts', create: ['-o', 'lazy_refcounts=on'], io: DATA },
  { name: 'existing qemu-img snapshots', create: [], io: DATA, snapshots: ['old1', 'old2'] },
];

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'vmforge-snap-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

function prepareVariant(name: string, v: Variant) {
  return prepare(join(root, name.replace(/\W+/g, '_')), (cwd) => {
    if (v.backing) {
      must(cwd, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '8M']);
      must(cwd, 'qemu-io', ['-c', 'write -P 0x42 0 8M', 'base.qcow2']);
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
    for (const s of v.snapshots ?? []) {
      must(cwd, 'qemu-img', ['snapshot', '-c', s, 'img.qcow2']);
      must(cwd, 'qemu-io', ['-c', 'write -P 0x70 2M 128k', 'img.qcow2']);
    }
  });
}

/** qemu-io on both copies (a guest writing between snapshot operations). */
function ioBoth(dirs: { q: string; v: string }, cmd: string): void {
  must(dirs.q, 'qemu-io', ['-c', cmd, 'img.qcow2']);
  must(dirs.v, 'qemu-io', ['-c', cmd, 'img.qcow2']);
}

describeWithTools(['qemu-img', 'qemu-io'], 'snapshot -c/-a/-d matches qemu-img', () => {
  it.each(variants)('$name', async (v) => {
    const dirs = prepareVariant(v.name, v);
    const opts = { image: 'img.qcow2' };
    const problems: string[] = [];
    const step = async (args: string[]) => problems.push(...(await runBoth(dirs, args, opts)));
    await step(['snapshot', '-c', 'first', 'img.qcow2']);
    // Writes after a snapshot must copy shared clusters, not overwrite them.
    ioBoth(dirs, 'write -P 0x71 512k 1M');
    ioBoth(dirs, 'write -z 3M 64k');
    await step(['snapshot', '-c', 'second', 'img.qcow2']);
    ioBoth(dirs, 'discard 0 2M');
    await step(['snapshot', '-a', 'first', 'img.qcow2']);
    ioBoth(dirs, 'write -P 0x72 6M 1M');
    await step(['snapshot', '-d', 'second', 'img.qcow2']);
    await step(['snapshot', '-d', 'first', 'img.qcow2']);
    expect(problems).toEqual([]);
  });

  it('applies a snapshot taken at another virtual size (v3), as qemu-img does', async () => {
    const dirs = prepareVariant('sizes', { name: 'sizes', create: [], io: DATA });
    const opts = { image: 'img.qcow2' };
    const problems: string[] = [];
    problems.push(...(await runBoth(dirs, ['snapshot', '-c', 'small', 'img.qcow2'], opts)));
    for (const d of [dirs.q, dirs.v]) must(d, 'qemu-img', ['resize', 'img.qcow2', '24M']);
    ioBoth(dirs, 'write -P 0x73 20M 1M');
    problems.push(...(await runBoth(dirs, ['snapshot', '-c', 'big', 'img.qcow2'], opts)));
    problems.push(...(await runBoth(dirs, ['snapshot', '-a', 'small', 'img.qcow2'], opts)));
    problems.push(...(await runBoth(dirs, ['snapshot', '-a', 'big', 'img.qcow2'], opts)));
    expect(problems).toEqual([]);
  });

  it('fails like qemu-img: unknown names, mixed actions, raw images, data files, bitmaps', async () => {
    const dirs = prepare(join(root, 'errors'), (cwd) => {
      must(cwd, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'img.qcow2', '8M']);
      must(cwd, 'qemu-img', ['snapshot', '-c', 's1', 'img.qcow2']);
      writeFileSync(join(cwd, 'disk.raw'), Buffer.alloc(1 << 20));
      must(cwd, 'qemu-img', [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-o',
        'data_file=d.raw',
        'df.qcow2',
        '1M',
      ]);
      must(cwd, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'bm.qcow2', '8M']);
      must(cwd, 'qemu-img', ['bitmap', '--add', 'bm.qcow2', 'b0']);
      must(cwd, 'qemu-img', ['snapshot', '-c', 's1', 'bm.qcow2']);
      must(cwd, 'qemu-img', [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-u',
        '-b',
        'gone.qcow2',
        '-F',
        'qcow2',
        'orphan.qcow2',
        '1M',
      ]);
    });
    const cases: [string[], string][] = [
      [['snapshot', '-d', 'nope', 'img.qcow2'], 'img.qcow2'],
      [['snapshot', '-a', 'nope', 'img.qcow2'], 'img.qcow2'],
      [['snapshot', '-d', '1', 'img.qcow2'], 'img.qcow2'],
      [['snapshot', '-c', 'a', '-d', 'b', 'img.qcow2'], 'img.qcow2'],
      [['snapshot', '-c', 'a', '-c', 'b', 'img.qcow2'], 'img.qcow2'],
      [['snapshot', '-l', 'img.qcow2', 'x'], 'img.qcow2'],
      [['snapshot', '-f', 'qcow2', '-l', 'img.qcow2'], 'img.qcow2'],
      [['snapshot', '-c'], 'img.qcow2'],
      [['snapshot', 'img.qcow2'], 'img.qcow2'],
      [['snapshot', '-q', '-c', 'q', 'img.qcow2'], 'img.qcow2'],
      [['snapshot', '-c', 'x', 'disk.raw'], 'disk.raw'],
      [['snapshot', '-a', 'x', 'disk.raw'], 'disk.raw'],
      [['snapshot', '-d', 'x', 'disk.raw'], 'disk.raw'],
      [['snapshot', '-l', 'disk.raw'], 'disk.raw'],
      [['snapshot', '-c', 'x', 'df.qcow2'], 'df.qcow2'],
      [['snapshot', '-d', 'x', 'df.qcow2'], 'df.qcow2'],
      [['snapshot', '-a', 's1', 'bm.qcow2'], 'bm.qcow2'],
      [['snapshot', '-l', 'orphan.qcow2'], 'orphan.qcow2'],
      [['snapshot', '-c', 'x', 'missing.qcow2'], 'missing.qcow2'],
    ];
    const problems: string[] = [];
    for (const [args, image] of cases) {
      // The data-file image's info needs its data file: compare only what the tools print.
      // Layouts are not compared here: QEMU rewrites persistent bitmaps on every read-write
      // open (bitmaps are not vmforge-snapshot's business), and nothing else changes.
      problems.push(
        ...(await runBoth(dirs, args, {
          image: image === 'df.qcow2' ? 'absent' : image,
          compareLayout: false,
        })),
      );
    }
    expect(problems).toEqual([]);
  });

  it('records the wall clock, VM clock 0, icount 0, the disk size and the next free id', async () => {
    const dirs = prepareVariant('clock', { name: 'clock', create: [], io: [] });
    must(dirs.v, 'qemu-img', ['snapshot', '-c', 'x', 'img.qcow2']);
    must(dirs.v, 'qemu-img', ['snapshot', '-c', 'y', 'img.qcow2']);
    must(dirs.v, 'qemu-img', ['snapshot', '-d', 'x', 'img.qcow2']);
    const before = Date.now() / 1000;
    expect((await vmforgeImg(dirs.v, ['snapshot', '-c', 'mine', 'img.qcow2'])).code).toBe(0);
    const after = Date.now() / 1000;
    const info = JSON.parse(must(dirs.v, 'qemu-img', ['info', '--output=json', 'img.qcow2'])) as {
      snapshots: Record<string, number | string>[];
    };
    const sn = info.snapshots.find((s) => s['name'] === 'mine')!;
    expect(sn['id']).toBe('3');
    expect(sn['vm-clock-sec']).toBe(0);
    expect(sn['vm-clock-nsec']).toBe(0);
    expect(sn['icount']).toBe(0);
    const t = (sn['date-sec'] as number) + (sn['date-nsec'] as number) / 1e9;
    expect(t).toBeGreaterThanOrEqual(Math.floor(before));
    expect(t).toBeLessThanOrEqual(after + 1);
    expect((sn['date-nsec'] as number) % 1000).toBe(0);
    expect(tool(dirs.v, 'qemu-img', ['check', 'img.qcow2']).code).toBe(0);
  });
});
