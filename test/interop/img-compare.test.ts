// vmforge-img compare against qemu-img 7.2 compare: same verdict lines, progress output, stderr
// (tool name swapped) and exit status (0 identical, 1 different, 2 open error, 3 block status
// error, 4 read error) over the image matrix: every image against its raw and qcow2 conversions
// (plain, strict, with progress), single-byte differences at chosen places, size mismatches,
// backing chains, argument errors and damaged images.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, openSync, closeSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildMatrix, type Matrix } from '../support/imgops-matrix.js';
import { allDifferences, vmforgeImg } from '../support/imgops-oracle.js';
import { runBin } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';

function poke(path: string, offset: number, byte: number): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, Buffer.from([byte]), 0, 1, offset);
  } finally {
    closeSync(fd);
  }
}

describeWithTools(['qemu-img', 'qemu-io'], 'vmforge-img compare matches qemu-img 7.2', () => {
  let m: Matrix;
  const q = (...args: string[]) =>
    execFileSync('qemu-img', args, { cwd: m.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const io = (file: string, ...cmds: string[]) =>
    execFileSync('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), file], {
      cwd: m.dir,
      stdio: ['ignore', 'ignore', 'pipe'],
    });

  beforeAll(() => {
    m = buildMatrix(mkdtempSync(join(tmpdir(), 'vmforge-compare-')));
    for (const image of m.images) {
      q('convert', '-O', 'raw', image.file, `${image.file}.conv.raw`);
      q('convert', '-O', 'qcow2', image.file, `${image.file}.conv.qcow2`);
    }
  });
  afterAll(() => {
    if (m) rmSync(m.dir, { recursive: true, force: true });
  });

  it('finds every image identical to its conversions, the same way', async () => {
    const commands: string[][] = [];
    for (const { file } of m.images) {
      for (const flags of [[], ['-s'], ['-p'], ['-s', '-p']]) {
        commands.push(['compare', ...flags, file, `${file}.conv.raw`]);
        commands.push(['compare', ...flags, `${file}.conv.qcow2`, file]);
      }
      commands.push(['compare', '-q', file, `${file}.conv.raw`]);
    }
    const diffs = await allDifferences(commands, m.dir);
    expect(diffs).toEqual([]);
    // Not vacuous: the conversions are identical and strict mode does tell raw from qcow2.
    const plain = await vmforgeImg(['compare', 'v3.qcow2', 'v3.qcow2.conv.raw'], m.dir);
    expect(plain).toMatchObject({ code: 0, stdout: 'Images are identical.\n' });
    const strict = await vmforgeImg(['compare', '-s', 'v3.qcow2', 'v3.qcow2.conv.raw'], m.dir);
    expect(strict.code).toBe(1);
    expect(strict.stdout).toMatch(/^Strict mode: Offset \d+ block status mismatch!\n$/);
  });

  it('reports the first differing sector like qemu-img', async () => {
    const commands: string[][] = [];
    // One byte changed in data, in zero clusters, in unallocated space, in the last sector.
    const places: [string, number][] = [
      ['v3.qcow2', 0],
      ['v3.qcow2', 100_500],
      ['v3.qcow2', 2 * 1024 * 1024 + 777], // zero clusters
      ['v3.qcow2', 10_000_000], // unallocated
      ['v3.qcow2', 16 * 1024 * 1024 - 1],
      ['xl2.qcow2', 8 * 1024 * 1024 + 1000], // zero subcluster
      ['top.qcow2', 20 * 1024 * 1024 - 1], // beyond the backing file's end
      ['top.qcow2', 9 * 1024 * 1024], // from the raw base
      ['odd.raw', 99_999], // the partial last sector
      ['zlib.qcow2', 65_535], // compressed cluster
    ];
    for (const [i, [file, offset]] of places.entries()) {
      const changed = `changed-${i}.raw`;
      copyFileSync(join(m.dir, `${file}.conv.raw`), join(m.dir, changed));
      poke(join(m.dir, changed), offset, 0xee);
      commands.push(['compare', file, changed]);
      commands.push(['compare', '-p', changed, file]);
      commands.push(['compare', '-s', `${file}.conv.qcow2`, changed]);
    }
    const diffs = await allDifferences(commands, m.dir);
    expect(diffs).toEqual([]);
    const r = await vmforgeImg(['compare', 'v3.qcow2', 'changed-1.raw'], m.dir);
    expect(r).toMatchObject({ code: 1, stdout: 'Content mismatch at offset 100352!\n' });
  });

  it('handles images of different sizes the same way', async () => {
    // grown: same content then zeros; grown-data: data beyond the smaller image's end.
    q('convert', '-O', 'qcow2', 'v3.qcow2', 'grown.qcow2');
    q('resize', '-q', 'grown.qcow2', '20M');
    io('grown.qcow2', 'write -z 18M 1M');
    q('convert', '-O', 'qcow2', 'v3.qcow2', 'grown-data.qcow2');
    q('resize', '-q', 'grown-data.qcow2', '20M');
    io('grown-data.qcow2', 'write -P 9 18M 4k');
    const commands: string[][] = [];
    for (const pair of [
      ['grown.qcow2', 'v3.qcow2'],
      ['v3.qcow2', 'grown.qcow2'],
      ['grown-data.qcow2', 'v3.qcow2'],
      ['v3.qcow2.conv.raw', 'grown-data.qcow2'],
      ['top.qcow2', 'mid.qcow2'],
      ['mid.qcow2', 'top.qcow2'],
      ['empty.raw', 'v3.qcow2'],
      ['empty.qcow2', 'empty.raw'],
      ['sparse.raw', 'odd.raw'],
    ]) {
      for (const flags of [[], ['-p'], ['-s'], ['-q']])
        commands.push(['compare', ...flags, ...pair]);
    }
    expect(await allDifferences(commands, m.dir)).toEqual([]);
    const r = await vmforgeImg(['compare', 'grown.qcow2', 'v3.qcow2'], m.dir);
    expect(r).toMatchObject({
      code: 0,
      stdout: 'Warning: Image size mismatch!\nImages are identical.\n',
    });
  });

  it('compares sparse 1 TiB images by allocation, not by reading', async () => {
    const tib = m.images.find((i) => i.file === 'tib.qcow2');
    expect(tib).toBeDefined();
    q('create', '-q', '-f', 'qcow2', 'tib-empty.qcow2', '1T');
    const commands = [
      ['compare', '-p', 'tib.qcow2', 'tib.qcow2.conv.qcow2'],
      ['compare', 'tib.qcow2', 'tib-empty.qcow2'],
      ['compare', '-s', 'tib.qcow2', 'tib.qcow2.conv.qcow2'],
    ];
    expect(await allDifferences(commands, m.dir)).toEqual([]);
  });

  it('rejects bad arguments and unopenable images with the same messages and codes', async () => {
    const commands: string[][] = [
      ['compare'],
      ['compare', 'v3.qcow2'],
      ['compare', 'v3.qcow2', 'v3.qcow2', 'v3.qcow2'],
      ['compare', '-T', 'bogus', 'v3.qcow2', 'v3.qcow2'],
      ['compare', '-p', '-T', 'bogus', 'v3.qcow2', 'v3.qcow2'],
      ['compare', '-T', 'none', '-U', 'v3.qcow2', 'v3.qcow2.conv.raw'],
      ['compare', 'nosuch.qcow2', 'v3.qcow2'],
      ['compare', '-p', 'v3.qcow2', 'nosuch.qcow2'],
      ['compare', '-f', 'qcow2', 'sparse.raw', 'sparse.raw'],
      ['compare', '-F', 'raw', 'v3.qcow2', 'v3.qcow2'],
      ['compare', '-f', 'raw', '-F', 'raw', 'v3.qcow2', 'v3.qcow2'],
      ['compare', '-x', 'v3.qcow2', 'v3.qcow2'],
    ];
    expect(await allDifferences(commands, m.dir)).toEqual([]);
    // --object needs QEMU's object model: refused, with compare's exit status for it.
    const r = await vmforgeImg(['compare', '--object', 'secret,id=s,data=x', 'a', 'b'], m.dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--object is not supported/);
  });

  it('reports damaged images like qemu-img (exit 2, 3 or 4), without a stack trace', async () => {
    const commands = m.damaged.flatMap((file) => [
      ['compare', file, 'healthy.qcow2'],
      ['compare', '-s', 'healthy.qcow2', file],
      ['compare', file, file],
    ]);
    expect(await allDifferences(commands, m.dir)).toEqual([]);
    const codes = new Set<number>();
    for (const file of m.damaged)
      codes.add((await vmforgeImg(['compare', file, file], m.dir)).code);
    // The shipped binary, spawned: QEMU's lines only, no stack trace.
    for (const file of ['l2-random.qcow2', 'compressed-garbage.qcow2', 'random-header.qcow2']) {
      const r = await runBin('vmforge-img', ['compare', file, file], { cwd: m.dir });
      expect(r.code).toBeGreaterThan(1);
      expect(r.stderr).not.toMatch(/\n\s+at |internal error/);
    }
    // The battery covers open errors, block status errors and read errors.
    expect([...codes].sort()).toEqual(expect.arrayContaining([0, 2, 3, 4]));
  });
});
