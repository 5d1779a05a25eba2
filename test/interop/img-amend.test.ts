// `vmforge-img amend` against `qemu-img amend` on copies of the same images: compat up and down
// (zero clusters expanded or dropped, snapshots rewritten with v3 extra data, dirty images,
// zstd), refcount_bits changes in both directions (and the refusal when a refcount does not
// fit), lazy_refcounts, data_file / data_file_raw, size, the backing-file refusal, -o help, -p
// progress output and the messages for options amend does not take. Results must agree in exit
// code, output, info JSON, guest and snapshot content and `qemu-img check` (clean, same layout).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { must, prepare, runBoth } from '../support/img-parity.js';
import { describeWithTools } from '../support/tools.js';

interface Case {
  name: string;
  create: string[];
  io?: string[];
  backing?: boolean;
  snapshot?: boolean;
  /** Amend arguments (before the file name), each run on a fresh copy. */
  amends: string[][];
}

const DATA = ['write -P 0x61 0 1M', 'write -z 2M 256k', 'write -P 0x62 3M 1M', 'write -z 6M 1M'];

const cases: Case[] = [
  {
    name: 'v3 -> v2 (zero clusters dropped), -> 1.1 no-op, lazy refcounts, sizes',
    create: [],
    io: DATA,
    amends: [
      ['-o', 'compat=0.10'],
      ['-o', 'compat=v2'],
      ['-o', 'compat=1.1'],
      ['-o', 'lazy_refcounts=on'],
      ['-o', 'size=16M'],
      ['-o', 'size=2M'],
      ['-p', '-o', 'compat=0.10'],
      ['-q', '-p', '-o', 'compat=0.10'],
    ],
  },
  {
    name: 'refcount widths',
    create: [],
    io: DATA,
    snapshot: true,
    amends: [
      ['-o', 'refcount_bits=1'],
      ['-o', 'refcount_bits=2'],
      ['-o', 'refcount_bits=64'],
      ['-p', '-o', 'refcount_bits=8'],
      ['-o', 'refcount_bits=4,compat=0.10'],
    ],
  },
  {
    name: '512 B clusters: refcount_bits=64 (reftable grows)',
    create: ['-o', 'cluster_size=512'],
    io: ['write -P 0x63 0 3M'],
    amends: [
      ['-o', 'refcount_bits=64'],
      ['-o', 'refcount_bits=1'],
    ],
  },
  {
    name: 'v3 over a backing file -> v2 (zero clusters become data, also in snapshots)',
    create: [],
    io: DATA,
    backing: true,
    snapshot: true,
    amends: [
      ['-o', 'compat=0.10'],
      ['-p', '-o', 'compat=0.10'],
      ['-o', 'backing_file=base.qcow2,backing_fmt=qcow2'],
    ],
  },
  {
    name: 'v2 with a snapshot -> v3',
    create: ['-o', 'compat=0.10'],
    io: DATA,
    snapshot: true,
    amends: [
      ['-o', 'compat=1.1'],
      ['-p', '-o', 'compat=v3,lazy_refcounts=on,refcount_bits=8'],
    ],
  },
  {
    name: 'lazy refcounts -> off, -> v2',
    create: ['-o', 'lazy_refcounts=on'],
    io: DATA,
    amends: [
      ['-o', 'lazy_refcounts=off'],
      ['-o', 'compat=0.10'],
    ],
  },
  {
    name: 'zstd',
    create: ['-o', 'compression_type=zstd'],
    io: ['write -P 0x64 0 1M'],
    amends: [['-o', 'compat=0.10']],
  },
  {
    name: 'zstd with compressed clusters',
    create: ['-o', 'compression_type=zstd'],
    io: ['write -c -P 0x65 0 1M'],
    amends: [['-o', 'compat=0.10']],
  },
  {
    name: 'extended L2',
    create: ['-o', 'extended_l2=on'],
    io: DATA,
    amends: [
      ['-o', 'compat=0.10'],
      ['-o', 'refcount_bits=4'],
    ],
  },
  {
    name: 'refusals and messages',
    create: [],
    io: DATA,
    snapshot: true,
    amends: [
      ['-o', 'cluster_size=4k'],
      ['-o', 'foo=bar'],
      ['-o', 'lazy_refcounts=maybe'],
      ['-o', 'compat=v4'],
      ['-o', 'refcount_bits=3'],
      ['-o', 'refcount_bits=128'],
      ['-o', 'data_file=x.raw'],
      ['-o', 'data_file_raw=on'],
      ['-o', 'backing_file=other.qcow2'],
      ['-o', 'backing_fmt=qcow2'],
      ['-o', 'encrypt.new-secret=x'],
      ['-o', 'lazy_refcounts=on,compat=0.10'],
      ['-o', 'size=16M,compat=0.10'],
      ['-o', 'help'],
      ['-f', 'qcow2', '-o', 'help'],
      ['-f', 'raw', '-o', 'compat=1.1'],
      ['-t', 'bogus', '-o', 'compat=1.1'],
      [],
    ],
  },
];

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'vmforge-amend-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describeWithTools(['qemu-img', 'qemu-io'], 'amend matches qemu-img', () => {
  it.each(cases)('$name', async (c) => {
    const problems: string[] = [];
    for (const args of c.amends) {
      const dirs = prepare(join(root, c.name.replace(/\W+/g, '_')), (cwd) => {
        if (c.backing) {
          must(cwd, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '8M']);
          must(cwd, 'qemu-io', ['-c', 'write -P 0x42 0 8M', 'base.qcow2']);
        }
        const backing = c.backing ? ['-b', 'base.qcow2', '-F', 'qcow2'] : [];
        must(cwd, 'qemu-img', [
          'create',
          '-q',
          '-f',
          'qcow2',
          ...c.create,
          ...backing,
          'img.qcow2',
          '8M',
        ]);
        for (const cmd of c.io ?? []) must(cwd, 'qemu-io', ['-c', cmd, 'img.qcow2']);
        if (c.snapshot) {
          must(cwd, 'qemu-img', ['snapshot', '-c', 's', 'img.qcow2']);
          must(cwd, 'qemu-io', [
            '-c',
            'write -P 0x66 512k 1M',
            '-c',
            'write -z 3M 64k',
            'img.qcow2',
          ]);
        }
      });
      problems.push(
        ...(await runBoth(dirs, ['amend', ...args, 'img.qcow2'], { image: 'img.qcow2' })),
      );
    }
    expect(problems).toEqual([]);
  });

  it('external data files: data_file rename, data_file_raw off, downgrade refused', async () => {
    const problems: string[] = [];
    for (const args of [
      ['-o', 'data_file=renamed.raw'],
      ['-o', 'data_file_raw=off'],
      ['-o', 'compat=0.10'],
      ['-o', 'refcount_bits=8'],
    ]) {
      const dirs = prepare(join(root, 'datafile'), (cwd) => {
        must(cwd, 'qemu-img', [
          'create',
          '-q',
          '-f',
          'qcow2',
          '-o',
          'data_file=img.raw,data_file_raw=on',
          'img.qcow2',
          '4M',
        ]);
        must(cwd, 'qemu-io', ['-c', 'write -P 0x67 0 1M', 'img.qcow2']);
      });
      // The renamed data file does not exist: compare what the tools print and the header.
      problems.push(...(await runBoth(dirs, ['amend', ...args, 'img.qcow2'], { image: 'absent' })));
      const info = (d: string) =>
        must(d, 'qemu-img', ['info', '--output=json', '-U', 'img.qcow2']).replace(
          /"actual-size": \d+/,
          '',
        );
      if (args[1] !== 'data_file=renamed.raw' && info(dirs.q) !== info(dirs.v)) {
        problems.push(`${args.join(' ')}: info ${info(dirs.q)} vs ${info(dirs.v)}`);
      }
    }
    expect(problems).toEqual([]);
  });
});
