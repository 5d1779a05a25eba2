// vmforge-img measure against qemu-img 7.2 measure: same stdout (human and JSON), stderr (tool
// name swapped) and exit status over the image matrix of test/support/imgops-matrix.ts with the
// qcow2 create options that change the size, --size, -l snapshots, the `bitmaps` field rules,
// argument errors and damaged images.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildMatrix, type Matrix } from '../support/imgops-matrix.js';
import { allDifferences, qemuImg, vmforgeImg } from '../support/imgops-oracle.js';
import { runBin } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';

const TARGETS: string[][] = [
  ['-O', 'qcow2'],
  ['-O', 'raw'],
  ['-O', 'qcow2', '-o', 'cluster_size=2M,extended_l2=on'],
  ['-O', 'qcow2', '-o', 'cluster_size=512', '-o', 'refcount_bits=1'],
  ['-O', 'qcow2', '-o', 'refcount_bits=64,cluster_size=4k'],
  ['-O', 'qcow2', '-o', 'compat=0.10'],
  ['-O', 'qcow2', '-o', 'preallocation=falloc'],
  ['-O', 'qcow2', '-o', 'preallocation=metadata,compression_type=zstd,lazy_refcounts=on'],
  ['-O', 'qcow2', '-o', 'backing_file=whatever'],
];

describeWithTools(['qemu-img', 'qemu-io'], 'vmforge-img measure matches qemu-img 7.2', () => {
  let m: Matrix;
  beforeAll(() => {
    m = buildMatrix(mkdtempSync(join(tmpdir(), 'vmforge-measure-')));
  });
  afterAll(() => {
    if (m) rmSync(m.dir, { recursive: true, force: true });
  });

  it('measures every matrix image for every target the same', async () => {
    const commands: string[][] = [];
    for (const image of m.images) {
      for (const [i, target] of TARGETS.entries()) {
        commands.push(['measure', ...target, image.file]);
        // JSON for a subset: the numbers are the same code path.
        if (i < 3) commands.push(['measure', '--output=json', ...target, image.file]);
      }
      commands.push(['measure', '-f', image.format, '-O', 'qcow2', image.file]);
    }
    expect(commands.length).toBeGreaterThan(200);
    expect(await allDifferences(commands, m.dir)).toEqual([]);
  });

  it('measures --size with every size-changing option the same', async () => {
    const commands: string[][] = [];
    for (const size of [
      '0',
      '1',
      '1000',
      '64k',
      '1G',
      '100G',
      '1T',
      '16T',
      '9223372036854775807',
    ]) {
      for (const target of [
        ['-O', 'qcow2'],
        ['-O', 'raw'],
        ['-O', 'qcow2', '-o', 'cluster_size=2M'],
        ['-O', 'qcow2', '-o', 'cluster_size=512,refcount_bits=1'],
        ['-O', 'qcow2', '-o', 'extended_l2=on,cluster_size=16k'],
        ['-O', 'qcow2', '-o', 'preallocation=full,refcount_bits=8'],
        ['-O', 'qcow2', '-o', 'compat=0.10,preallocation=metadata'],
      ]) {
        commands.push(['measure', '--output=json', ...target, '--size', size]);
      }
    }
    // --size beyond 2^53 bytes: exact uint64 figures (2 MiB clusters allow exabytes).
    commands.push(['measure', '-O', 'qcow2', '-o', 'cluster_size=2M', '--size', '2E']);
    commands.push([
      'measure',
      '--output=json',
      '-O',
      'qcow2',
      '-o',
      'cluster_size=2M',
      '--size',
      '4E',
    ]);
    commands.push(['measure', '-O', 'raw', '--size', '9223372036854775807']);
    commands.push(['measure', '-O', 'qcow2', '-o', 'size=5G']);
    commands.push(['measure', '-O', 'qcow2', '-o', 'size=5G', '--size', '1G']);
    commands.push(['measure', '-O', 'qcow2', '--size', '1G', '--size', '2G']);
    expect(await allDifferences(commands, m.dir)).toEqual([]);
  });

  it('measures internal snapshots (-l) the same', async () => {
    const commands = [
      ['first', 'second', '1', '2', 'nosuch', ''],
      [
        'snapshot.id=1',
        'snapshot.name=second',
        'snapshot.id=1,snapshot.name=first',
        'snapshot.id=1,snapshot.name=second',
        'snapshot.foo=1',
        'snapshot.id=1,x',
        'snapshot.id=1,noy',
        'snapshot.id=1,help',
        'snapshot.foo=1,help',
        'snapshot.id=1,?',
      ],
    ]
      .flat()
      .map((l) => ['measure', '-O', 'qcow2', '-l', l, 'snaps.qcow2']);
    commands.push(['measure', '-O', 'qcow2', '-l', 'first', 'v3.qcow2']);
    commands.push(['measure', '-O', 'qcow2', '-l', 'first', 'sparse.raw']);
    commands.push(['measure', '-O', 'qcow2', '-l', 'first', '-f', 'raw', 'sparse.raw']);
    expect(await allDifferences(commands, m.dir)).toEqual([]);
    // The snapshot view really is measured: "first" holds 1 MiB, the active image more.
    const first = qemuImg(
      ['measure', '--output=json', '-O', 'raw', '-l', 'first', 'snaps.qcow2'],
      m.dir,
    );
    expect(first.code).toBe(0);
    const a = qemuImg(['measure', '-O', 'qcow2', '-l', 'first', 'snaps.qcow2'], m.dir).stdout;
    const b = qemuImg(['measure', '-O', 'qcow2', 'snaps.qcow2'], m.dir).stdout;
    expect(a).not.toBe(b);
  });

  it('follows the bitmaps field rules', async () => {
    const has = async (args: string[]) =>
      JSON.parse((await vmforgeImg(['measure', '--output=json', ...args], m.dir)).stdout) as Record<
        string,
        unknown
      >;
    // Source and target both qcow2 v3: reported (0 when the source has none).
    expect((await has(['-O', 'qcow2', 'bitmaps.qcow2']))['bitmaps']).toBeGreaterThan(0);
    expect((await has(['-O', 'qcow2', 'v3.qcow2']))['bitmaps']).toBe(0);
    // Target raw or v2, source raw or v2, or no source: not reported.
    expect(await has(['-O', 'raw', 'bitmaps.qcow2'])).not.toHaveProperty('bitmaps');
    expect(await has(['-O', 'qcow2', '-o', 'compat=0.10', 'bitmaps.qcow2'])).not.toHaveProperty(
      'bitmaps',
    );
    expect(await has(['-O', 'qcow2', 'sparse.raw'])).not.toHaveProperty('bitmaps');
    expect(await has(['-O', 'qcow2', 'v2.qcow2'])).not.toHaveProperty('bitmaps');
    expect(await has(['-O', 'qcow2', '--size', '1G'])).not.toHaveProperty('bitmaps');
    // Human output has the extra line exactly when JSON has the field.
    const human = (
      await vmforgeImg(['measure', '-O', 'qcow2', '-o', 'cluster_size=4k', 'bitmaps.qcow2'], m.dir)
    ).stdout;
    expect(human).toMatch(/^bitmaps size: \d+$/m);
    expect(
      await allDifferences(
        [
          ['measure', '-O', 'qcow2', '-o', 'cluster_size=4k', 'bitmaps.qcow2'],
          ['measure', '-O', 'qcow2', '-o', 'cluster_size=2M', 'bitmaps.qcow2'],
        ],
        m.dir,
      ),
    ).toEqual([]);
  });

  it('rejects bad arguments and options with the same messages', async () => {
    const commands: string[][] = [
      ['measure'],
      ['measure', 'a', 'b'],
      ['measure', '-f', 'raw', '--size', '1G'],
      ['measure', '-l', 'x', '--size', '1G'],
      ['measure', '--size', '1G', 'sparse.raw'],
      ['measure', '--size', 'abc'],
      ['measure', '--size', '-1'],
      ['measure', '--size', '9223372036854775808'],
      ['measure', '--output=xml', '--size', '1G'],
      ['measure', '-O', 'bogus', '--size', '1G'],
      ['measure', '-O', 'vmdk', '--size', '1G'],
      ['measure', '-O', 'dmg', '--size', '1G'],
      ['measure', '-O', 'luks', '--size', '1G'],
      ['measure', '-O', 'luks', '-o', 'key-secret=sec0', '--size', '1G'],
      ['measure', 'nosuch.qcow2'],
      ['measure', '-f', 'qcow2', 'sparse.raw'],
    ];
    for (const o of [
      ',',
      'a,',
      'help',
      'bogus=1',
      'size=abc',
      'cluster_size=1000',
      'cluster_size=4M',
      'cluster_size=0',
      'cluster_size=1.5k',
      'extended_l2=on,cluster_size=8k',
      'extended_l2=maybe',
      'compat=v4',
      'compat',
      'compat=0.10,refcount_bits=8',
      'refcount_bits=3',
      'refcount_bits=128',
      'refcount_bits=abc',
      'preallocation=bogus',
      'encrypt.format=luks',
      'encrypt.format=luks,encrypt.key-secret=sec0',
      'encrypt.format=aes',
      'nocow=on,extent_size_hint=1M',
    ]) {
      commands.push(['measure', '-O', 'qcow2', '--size', '1G', '-o', o]);
    }
    commands.push(['measure', '-O', 'raw', '--size', '1G', '-o', 'preallocation=xyz']);
    commands.push(['measure', '-O', 'raw', '--size', '1G', '-o', 'cluster_size=64k']);
    commands.push(['measure', '-O', 'qcow2', '--size', '8E', '-o', 'cluster_size=2M']);
    commands.push(['measure', '-O', 'qcow2', '--size', '1P']);
    expect(await allDifferences(commands, m.dir)).toEqual([]);
  });

  it('reports damaged images like qemu-img, without a stack trace', async () => {
    const commands = m.damaged.flatMap((file) => [
      ['measure', '-O', 'qcow2', file],
      ['measure', '-O', 'raw', '--output=json', file],
    ]);
    expect(await allDifferences(commands, m.dir)).toEqual([]);
    // The shipped binary, spawned: one line naming the problem, nothing else.
    for (const file of ['l2-random.qcow2', 'random-header.qcow2', 'l1-huge.qcow2']) {
      const r = await runBin('vmforge-img', ['measure', '-O', 'qcow2', file], { cwd: m.dir });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^(qcow2: |vmforge-img: )/);
      expect(r.stderr).not.toMatch(/\n\s+at |internal error/);
    }
  });
});
