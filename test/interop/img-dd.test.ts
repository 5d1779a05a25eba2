// vmforge-img dd against qemu-img 7.2 dd: for the image matrix, raw and qcow2 outputs and a set
// of bs/count/skip operands, both tools print the same (tool and output names swapped) and exit
// the same; their outputs compare equal with `qemu-img compare`, have the same virtual size,
// `info --output=json` (but for actual-size, which depends on the host file system's
// allocation) and, for qcow2, the same `map --output=json` layout and a clean `qemu-img check`.
// Raw outputs also have the same file length. Then operand errors and damaged inputs.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildMatrix, type Matrix } from '../support/imgops-matrix.js';
import { allDifferences, asVmforge, qemuImg, vmforgeImg } from '../support/imgops-oracle.js';
import { runBin } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';

// qemu-img dd copies in bs-sized requests (512 bytes by default: ~6 s for 64 MiB), so the
// default block size is only used on the small images.
const OPERANDS: string[][] = [
  ['bs=64k'],
  ['bs=1M', 'count=3', 'skip=2'],
  ['bs=4096', 'skip=1000'],
  ['bs=65536', 'count=100000', 'skip=3'],
  ['bs=7', 'count=1000', 'skip=13'],
  ['bs=1k', 'skip=100000000'], // past the end: warning, empty output, exit 0
  ['count=0'],
];

const SMALL = new Set(['odd.raw', 'empty.raw', 'empty.qcow2', 'prealloc.qcow2']);
const FULL = new Set(['sparse.raw', 'odd.raw', 'empty.raw', 'v3.qcow2', 'xl2.qcow2', 'top.qcow2']);

describeWithTools(['qemu-img', 'qemu-io'], 'vmforge-img dd matches qemu-img 7.2', () => {
  let m: Matrix;
  let n = 0;
  beforeAll(() => {
    m = buildMatrix(mkdtempSync(join(tmpdir(), 'vmforge-dd-')), { large: false });
  });
  afterAll(() => {
    if (m) rmSync(m.dir, { recursive: true, force: true });
  });

  /** Run both tools into fresh outputs; return the problems found (empty when all agree). */
  async function both(fmt: 'raw' | 'qcow2', args: string[]): Promise<string[]> {
    n++;
    const qOut = `q${n}.out`;
    const vOut = `v${n}.out`;
    const label = `dd -O ${fmt} ${args.join(' ')}`;
    const q = qemuImg(['dd', '-O', fmt, ...args, `of=${qOut}`], m.dir);
    const v = await vmforgeImg(['dd', '-O', fmt, ...args, `of=${vOut}`], m.dir);
    const problems: string[] = [];
    const qErr = asVmforge(q.stderr).replaceAll(qOut, vOut);
    if (q.code !== v.code || q.stdout !== v.stdout || qErr !== v.stderr) {
      problems.push(
        `${label}: exit ${q.code}/${v.code} stdout ${JSON.stringify([q.stdout, v.stdout])} stderr ${JSON.stringify([qErr, v.stderr])}`,
      );
    }
    const qHas = existsSync(join(m.dir, qOut));
    if (qHas !== existsSync(join(m.dir, vOut))) problems.push(`${label}: output exists ${qHas}`);
    if (!qHas) return problems;
    const cmp = qemuImg(['compare', '-f', fmt, '-F', fmt, qOut, vOut], m.dir);
    if (cmp.code !== 0) problems.push(`${label}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
    const info = (file: string) => {
      const j = JSON.parse(qemuImg(['info', '--output=json', '-f', fmt, file], m.dir).stdout);
      delete j.filename;
      delete j['actual-size'];
      return j as unknown;
    };
    expect(info(vOut)).toEqual(info(qOut));
    if (fmt === 'raw') {
      const [qs, vs] = [statSync(join(m.dir, qOut)).size, statSync(join(m.dir, vOut)).size];
      if (qs !== vs) problems.push(`${label}: file sizes ${qs} vs ${vs}`);
    } else {
      const map = (file: string) =>
        qemuImg(['map', '--output=json', '-f', fmt, file], m.dir).stdout;
      if (map(qOut) !== map(vOut)) problems.push(`${label}: qcow2 layouts differ`);
      const check = qemuImg(['check', vOut], m.dir);
      if (check.code !== 0) problems.push(`${label}: check: ${check.stdout}${check.stderr}`);
    }
    rmSync(join(m.dir, qOut));
    rmSync(join(m.dir, vOut));
    return problems;
  }

  it('copies every matrix image like qemu-img, to raw and to qcow2', async () => {
    const problems: string[] = [];
    let runs = 0;
    for (const image of m.images) {
      for (const fmt of ['raw', 'qcow2'] as const) {
        const small = SMALL.has(image.file);
        // Every operand set on a few representative images, two on the others.
        const sets = FULL.has(image.file) ? OPERANDS : [OPERANDS[0]!, OPERANDS[4]!];
        for (const ops of small ? [[], ...sets] : sets) {
          problems.push(...(await both(fmt, [`if=${image.file}`, ...ops])));
          runs++;
        }
      }
    }
    expect(runs).toBeGreaterThan(100);
    expect(problems).toEqual([]);
  });

  it('copies exactly the selected blocks', async () => {
    writeFileSync(join(m.dir, 'blocks.raw'), Buffer.from('0123456789abcdefghij'.repeat(100)));
    const r = await vmforgeImg(
      ['dd', 'bs=10', 'skip=3', 'count=5', 'if=blocks.raw', 'of=sel.raw'],
      m.dir,
    );
    expect(r.code).toBe(0);
    // count applies before skip (qemu-img's arithmetic): 5 blocks of input, 3 skipped, 2 copied,
    // and the raw output is rounded up to a whole sector.
    const out = readFileSync(join(m.dir, 'sel.raw'));
    expect(out.length).toBe(512);
    expect(out.subarray(0, 20).toString()).toBe('0123456789abcdefghij'.slice(10) + '0123456789');
    expect(await both('raw', ['bs=10', 'skip=3', 'count=5', 'if=blocks.raw'])).toEqual([]);
  });

  it('rejects bad operands with the same messages', async () => {
    const commands: string[][] = [
      ['dd'],
      ['dd', 'if=v3.qcow2'],
      ['dd', 'of=x.raw'],
      ['dd', 'if=v3.qcow2', 'foo', 'of=x.raw'],
      ['dd', 'if=v3.qcow2', 'foo=1', 'of=x.raw'],
      ['dd', 'if=v3.qcow2', '=1', 'of=x.raw'],
      ['dd', 'bs=0', 'if=v3.qcow2', 'of=x.raw'],
      ['dd', 'bs=2G', 'if=v3.qcow2', 'of=x.raw'],
      ['dd', 'bs=abc', 'if=v3.qcow2', 'of=x.raw'],
      ['dd', 'bs=1.5', 'if=v3.qcow2', 'of=x.raw'],
      ['dd', 'count=-1', 'if=v3.qcow2', 'of=x.raw'],
      ['dd', 'count=x', 'if=v3.qcow2', 'of=x.raw'],
      ['dd', 'skip=9223372036854775808', 'if=v3.qcow2', 'of=x.raw'],
      ['dd', 'if=nosuch', 'of=x.raw'],
      ['dd', '-f', 'qcow2', 'if=sparse.raw', 'of=x.raw'],
      ['dd', '-O', 'bogus', 'if=v3.qcow2', 'of=x.raw'],
      ['dd', '-O', 'dmg', 'if=v3.qcow2', 'of=x.raw'],
      ['dd', '-O', 'bogus', 'if=nosuch', 'of=x.raw'],
      ['dd', 'if=v3.qcow2', 'of=nodir/x.raw'],
      ['dd', 'if=v3.qcow2', 'of=a:b'],
      ['dd', '-x', 'if=v3.qcow2', 'of=x.raw'],
    ];
    expect(await allDifferences(commands, m.dir)).toEqual([]);
  });

  it('never recreates its own input (qemu-img 7.2 zeroes a raw one)', async () => {
    writeFileSync(join(m.dir, 'self.raw'), Buffer.alloc(4096, 7));
    const r = await vmforgeImg(['dd', 'if=self.raw', 'of=self.raw'], m.dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Failed to get "write" lock');
    expect(readFileSync(join(m.dir, 'self.raw'))).toEqual(Buffer.alloc(4096, 7));
    // Its backing file either (qemu-img refuses that one through its image locks).
    expect(
      await allDifferences([['dd', '-O', 'qcow2', 'if=top.qcow2', 'of=mid.qcow2']], m.dir),
    ).toEqual([]);
  });

  it('reports damaged inputs like qemu-img, without a stack trace', async () => {
    const problems: string[] = [];
    for (const file of m.damaged) {
      problems.push(...(await both('raw', [`if=${file}`, 'bs=1M'])));
      problems.push(...(await both('qcow2', [`if=${file}`, 'bs=64k', 'count=20'])));
    }
    expect(problems).toEqual([]);
    for (const file of ['l2-random.qcow2', 'compressed-garbage.qcow2']) {
      const r = await runBin('vmforge-img', ['dd', 'bs=1M', `if=${file}`, 'of=damaged.out'], {
        cwd: m.dir,
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/error while reading from input image file: Input\/output error/);
      expect(r.stderr).not.toMatch(/\n\s+at |internal error/);
    }
  });
});
