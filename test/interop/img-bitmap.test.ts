// Persistent bitmaps against QEMU 7.2 (qemu-img, qemu-io, qemu-nbd + nbdinfo as the oracle):
// - `bitmap` parity: the same operations on sparse copies of the same images leave byte-identical
//   files, identical `qemu-img info --output=json` (bitmap list, flags, granularity, actual size)
//   and dirty maps, with the same messages and exit codes; `qemu-img check` stays clean;
// - writes through vmforge's library leave the dirty bits QEMU's own tracking (qemu-io) leaves;
// - `convert --bitmaps [--skip-broken-bitmaps]` parity;
// - a writer killed with SIGKILL leaves the bitmaps it was tracking in use (inconsistent), and a
//   writer dying at any write of its session never leaves a bitmap QEMU would trust wrongly.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/block/memory-storage.js';
import { isQcow2, openImage } from '../../src/image/open.js';
import { persistentBitmapsSize } from '../../src/img/measure.js';
import { openQcow2 } from '../../src/qcow2/open.js';
import { filesEqual } from '../support/files.js';
import { CrashingStorage } from '../support/crashing-storage.js';
import { img, run } from '../support/run.js';
import { describeWithTools } from '../support/tools.js';

const M = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'vmforge-bitmap-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

async function ok(file: string, args: string[]): Promise<string> {
  const r = await run(file, args, { cwd: dir });
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}
const qemuImg = (args: string[]) => ok('qemu-img', args);
const qemuIo = (image: string, cmds: string[]) =>
  ok('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), image]);

/** Dirty extents of a bitmap as QEMU serves them (qemu-nbd -B, read with nbdinfo --map). */
async function dirtyMap(image: string, bitmap: string): Promise<[number, number][]> {
  const out = await ok('nbdinfo', [
    `--map=qemu:dirty-bitmap:${bitmap}`,
    '--json',
    '--',
    '[',
    'qemu-nbd',
    '-r',
    '-B',
    bitmap,
    '-f',
    'qcow2',
    image,
    ']',
  ]);
  const extents = JSON.parse(out) as { offset: number; length: number; type: number }[];
  return extents.filter((e) => e.type === 1).map((e) => [e.offset, e.length]);
}

interface InfoBitmap {
  name: string;
  granularity: number;
  flags: string[];
}

async function info(image: string): Promise<Record<string, unknown>> {
  const json = JSON.parse(await qemuImg(['info', '--output=json', image])) as Record<
    string,
    unknown
  >;
  delete json['filename'];
  return json;
}

function bitmapsOf(i: Record<string, unknown>): InfoBitmap[] {
  const fs = i['format-specific'] as { data: { bitmaps?: InfoBitmap[] } };
  return fs.data.bitmaps ?? [];
}

async function checkClean(image: string): Promise<void> {
  const r = await run('qemu-img', ['check', '--output=json', image]);
  const res = JSON.parse(r.stdout) as Record<string, number>;
  expect(res['corruptions'] ?? 0, r.stdout).toBe(0);
  expect(res['leaks'] ?? 0, r.stdout).toBe(0);
  expect(res['check-errors'], r.stdout).toBe(0);
  expect(r.code).toBe(0);
  // vmforge's own check counts the bitmap clusters the same way (qcow2_check_bitmaps_refcounts).
  const ours = await img(['check', '--output=json', image]);
  expect(ours.stdout).toBe(r.stdout);
}

/**
 * One image in two sparse copies: `q` changed by qemu-img, `v` by vmforge-img. `step()` runs
 * the same command on both (`@` stands for the image) and compares everything.
 */
class Pair {
  readonly q: string;
  readonly v: string;
  constructor(name: string) {
    this.q = join(dir, `q-${name}.qcow2`);
    this.v = join(dir, `v-${name}.qcow2`);
  }

  /** `args`: create options, then the size. */
  async create(args: string[]): Promise<this> {
    const made = `${this.q}.new`;
    await qemuImg(['create', '-q', '-f', 'qcow2', ...args.slice(0, -1), made, args.at(-1)!]);
    await this.copyFrom(made);
    return this;
  }

  /** Both copies from one file, equally sparse (so `actual-size` can be compared). */
  async copyFrom(file: string): Promise<void> {
    await ok('cp', ['--sparse=always', file, this.v]);
    await ok('cp', ['--sparse=always', this.v, this.q]);
  }

  /** qemu-io on both copies (QEMU's own tracking dirties the bitmaps). */
  async io(cmds: string[]): Promise<void> {
    await qemuIo(this.q, cmds);
    await qemuIo(this.v, cmds);
  }

  /**
   * Run `qemu-img ARGS` and `vmforge-img ARGS`: same status and messages, then (unless `files`
   * is false: qemu-img leaves the targets of failed converts behind, vmforge removes them) the
   * same bytes and info.
   */
  async step(args: string[], files = true): Promise<{ code: number; stderr: string }> {
    const a = await run(
      'qemu-img',
      args.map((x) => (x === '@' ? this.q : x)),
      { cwd: dir },
    );
    const b = await img(
      args.map((x) => (x === '@' ? this.v : x)),
      dir,
    );
    const norm = (s: string, tool: string, file: string) =>
      s
        .replaceAll(`${tool}: `, 'TOOL: ')
        .replaceAll(file, '@')
        .replace(/#block\d+/g, '#blockN');
    const what = args.join(' ');
    expect(norm(b.stderr, 'vmforge-img', this.v), what).toBe(norm(a.stderr, 'qemu-img', this.q));
    expect(b.code, what).toBe(a.code);
    expect(b.stdout, what).toBe(a.stdout);
    if (files) await this.expectSame(what);
    return { code: a.code, stderr: a.stderr };
  }

  async expectSame(what: string): Promise<void> {
    expect(await filesEqual(this.q, this.v), `bytes after ${what}`).toBe(true);
    // Same data and holes in the image files (SEEK_DATA/SEEK_HOLE, as `qemu-img map -f raw`).
    const holes = (f: string) => ok('qemu-img', ['map', '-f', 'raw', '--output=json', f]);
    expect(await holes(this.v), `allocation after ${what}`).toBe(await holes(this.q));
    // Same info. actual-size is st_blocks, which on ext4 also counts extent-tree blocks: files
    // with the same holes may differ by a block depending on the order they were written in.
    const [iq, iv] = [await info(this.q), await info(this.v)];
    const slack = Math.abs(Number(iv['actual-size']) - Number(iq['actual-size']));
    expect(slack, `actual-size after ${what}`).toBeLessThanOrEqual(8192);
    expect({ ...iv, 'actual-size': 0 }, `info after ${what}`).toEqual({ ...iq, 'actual-size': 0 });
  }
}

const writer = fileURLToPath(new URL('../fixtures/bin/writer.mjs', import.meta.url));

describeWithTools(['qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo'], 'img bitmap', () => {
  it.each([
    { name: '64k', create: ['64M'], fine: '512' },
    { name: '512b-clusters', create: ['-o', 'cluster_size=512', '64M'], fine: '512' },
    { name: '4t-extl2', create: ['-o', 'extended_l2=on,cluster_size=128k', '4T'], fine: '64k' },
  ])('operations match qemu-img byte for byte ($name)', async ({ name, create, fine }) => {
    const p = await new Pair(name).create(create);
    await p.step(['bitmap', '--add', '@', 'b0']);
    await p.io(['write -P 1 1M 64k', 'write -P 2 10M 1', 'write -z 20M 70000']);
    await p.step(['bitmap', '--add', '-g', '4k', '@', 'b1']);
    await p.io(['write -P 3 3M 2M', 'discard 40M 100000', 'write -P 4 63M 1M']);
    await p.step(['bitmap', '--disable', '@', 'b1']);
    await p.io(['write -P 5 30M 64k']);
    await p.step(['bitmap', '--add', '--disable', '-g', fine, '@', 'b2']);
    await p.step(['bitmap', '--merge', 'b0', '@', 'b2']);
    await p.step(['bitmap', '--merge', 'b1', '--enable', '@', 'b2']);
    // b2 = b0 | b1 at its own granularity: what QEMU serves for it, exactly.
    const b0 = await dirtyMap(p.q, 'b0');
    expect(b0.some(([o, l]) => o <= 10 * M && o + l > 10 * M)).toBe(true);
    const b2 = await dirtyMap(p.v, 'b2');
    expect(b2).toEqual(await dirtyMap(p.q, 'b2'));
    expect(b2.length).toBeGreaterThan(3);
    await p.step(['bitmap', '--clear', '--enable', '--add', '@', 'b1']); // fails at --add
    expect(await dirtyMap(p.v, 'b1')).toEqual([]);
    await p.step(['bitmap', '--remove', '@', 'b0']);
    await p.io(['write -P 6 5M 3']);
    await p.step(['bitmap', '--remove', '--add', '-g', '2M', '@', 'b0']);
    await p.step(['bitmap', '--remove', '@', 'b1']);
    await p.step(['bitmap', '--remove', '@', 'b2']);
    await p.step(['bitmap', '--remove', '@', 'b0']); // the last one: the extension goes too
    expect(bitmapsOf(await info(p.v))).toEqual([]);
    await checkClean(p.v);
  });

  it('messages and exit codes match qemu-img', async () => {
    const p = await new Pair('msgs').create(['16M']);
    const other = join(dir, 'other.qcow2');
    await qemuImg(['create', '-q', '-f', 'qcow2', other, '32M']);
    await qemuImg(['bitmap', '--add', other, 'ob']);
    await p.step(['bitmap', '--add', '@', 'b0']);
    const cases: string[][] = [
      ['bitmap', '@', 'b0'],
      ['bitmap', '-g', '64k', '--remove', '@', 'b0'],
      ['bitmap', '-F', 'qcow2', '--merge', 'x', '@', 'b0'],
      ['bitmap', '-b', other, '--add', '@', 'b0'],
      ['bitmap', '--add', '@'],
      ['bitmap', '--add', '@', 'b0', 'extra'],
      ['bitmap', '-g', 'foo', '--add', '@', 'x'],
      ['bitmap', '-g', '1000', '--add', '@', 'x'],
      ['bitmap', '-g', '256', '--add', '@', 'x'],
      ['bitmap', '-g', '4G', '--add', '@', 'x'],
      ['bitmap', '--add', '@', ''],
      ['bitmap', '--add', '@', 'b0'],
      ['bitmap', '--add', '@', 'x'.repeat(1024)],
      ['bitmap', '--remove', '@', 'nope'],
      ['bitmap', '--clear', '@', 'nope'],
      ['bitmap', '--enable', '@', 'nope'],
      ['bitmap', '--merge', 'nope', '@', 'b0'],
      ['bitmap', '--merge', 'b0', '@', 'nope'],
      ['bitmap', '--merge', 'ob', '-b', other, '@', 'b0'],
      ['bitmap', '--merge', 'ob', '-b', join(dir, 'missing.qcow2'), '@', 'b0'],
      ['bitmap', '--merge', 'ob', '-b', other, '-F', 'raw', '@', 'b0'],
      ['bitmap', '--add', join(dir, 'missing.qcow2'), 'b0'],
      ['bitmap', '--add', '-f', 'raw', '@', 'b1'],
    ];
    for (const c of cases) {
      const { code } = await p.step(c);
      expect(code, c.join(' ')).toBe(1);
    }
    // Bitmaps a killed QEMU left in use: only --remove works on them.
    await qemuIo(p.q, ['sigraise 9']).catch(() => undefined);
    await p.copyFrom(p.q);
    for (const op of ['--enable', '--disable', '--clear']) {
      const { code, stderr } = await p.step(['bitmap', op, '@', 'b0']);
      expect(code).toBe(1);
      expect(stderr).toContain('Try block-dirty-bitmap-remove to delete this bitmap from disk');
    }
    await p.step(['bitmap', '--add', '@', 'b1']);
    await p.step(['bitmap', '--merge', 'b0', '@', 'b1']);
    expect((await p.step(['bitmap', '--remove', '@', 'b0'])).code).toBe(0);
    // Raw images have no bitmaps; probing one read-write prints QEMU's warning.
    const raw = new Pair('raw');
    await qemuImg(['create', '-q', '-f', 'raw', raw.q, '1M']);
    await raw.copyFrom(raw.q);
    await raw.step(['bitmap', '--add', '@', 'b0']);
    await raw.step(['bitmap', '--remove', '-f', 'raw', '@', 'b0']);
    // qcow2 v2 cannot store bitmaps.
    const v2 = await new Pair('v2').create(['-o', 'compat=0.10', '16M']);
    await v2.step(['bitmap', '--add', '@', 'b0']);
  });

  it("writes through vmforge's library leave the dirty bits QEMU's tracking leaves", async () => {
    let seed = 7;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const size = 256 * M;
    // 40 operations: from the 41st on, this sequence makes the qcow2 engine place data in other
    // clusters than QEMU (its frees are deferred to the next flush), so only the bitmaps match.
    const ops = Array.from({ length: 40 }, () => {
      const kind = ['write', 'zero', 'zero-unmap', 'discard'][rand(4)]!;
      const offset = rand(size - 1);
      return { kind, offset, length: Math.min(size - offset, 1 + rand(3 * M)) };
    });
    const qioCmd = (o: (typeof ops)[number]) =>
      o.kind === 'write'
        ? `write -P 0x5a ${o.offset} ${o.length}`
        : o.kind === 'discard'
          ? `discard ${o.offset} ${o.length}`
          : `write -z ${o.kind === 'zero-unmap' ? '-u ' : ''}${o.offset} ${o.length}`;
    for (const variant of ['all-enabled', 'mixed'] as const) {
      const p = await new Pair(`track-${variant}`).create([`${size}`]);
      await qemuImg(['bitmap', '--add', p.q, 'b64k']);
      await qemuImg(['bitmap', '--add', '-g', '512', p.q, 'b512']);
      await qemuImg(['bitmap', '--add', '-g', '2M', p.q, 'b2m']);
      await qemuIo(p.q, ['write -P 1 100M 1M']);
      if (variant === 'mixed') {
        await qemuImg(['bitmap', '--disable', p.q, 'b512']);
        await qemuImg(['bitmap', '--add', p.q, 'killed']);
        await qemuIo(p.q, ['sigraise 9']).catch(() => undefined); // every bitmap in use...
        await qemuImg(['bitmap', '--remove', p.q, 'b64k']);
        await qemuImg(['bitmap', '--remove', p.q, 'b512']);
        await qemuImg(['bitmap', '--remove', p.q, 'b2m']);
        await qemuImg(['bitmap', '--add', p.q, 'b64k']); // ...but 'killed', re-made
        await qemuImg(['bitmap', '--add', '-g', '512', '--disable', p.q, 'b512']);
        await qemuImg(['bitmap', '--add', '-g', '2M', p.q, 'b2m']);
        await qemuIo(p.q, ['write -P 1 100M 1M']);
      }
      await p.copyFrom(p.q);
      await qemuIo(p.q, ops.map(qioCmd));
      const dev = await openImage(p.v, { format: 'qcow2', readOnly: false });
      const data = new Uint8Array(3 * M).fill(0x5a);
      for (const o of ops) {
        if (o.kind === 'write') await dev.write(data.subarray(0, o.length), o.offset);
        else if (o.kind === 'discard') await dev.discard(o.offset, o.length);
        else await dev.writeZeroes(o.offset, o.length, { mayUnmap: o.kind === 'zero-unmap' });
      }
      await dev.close();
      const qi = bitmapsOf(await info(p.q));
      expect(bitmapsOf(await info(p.v))).toEqual(qi);
      for (const b of qi) {
        if (b.flags.includes('in-use')) continue;
        const map = await dirtyMap(p.v, b.name);
        expect(map, `${variant} ${b.name}`).toEqual(await dirtyMap(p.q, b.name));
        if (b.name !== 'b512' || variant === 'all-enabled') expect(map.length).toBeGreaterThan(5);
      }
      await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', p.q, p.v]).then((r) =>
        expect(r.code, r.stdout + r.stderr).toBe(0),
      );
      // With every bitmap enabled vmforge even lays the image out as QEMU does. (QEMU also
      // rewrites disabled bitmaps into new clusters on close; vmforge leaves them in place.)
      if (variant === 'all-enabled') await p.expectSame('tracked writes');
      await checkClean(p.v);
    }
  });

  it('convert --bitmaps matches qemu-img convert --bitmaps', async () => {
    const src = join(dir, 'convert-src.qcow2');
    await qemuImg(['create', '-q', '-f', 'qcow2', src, '64M']);
    await qemuImg(['bitmap', '--add', src, 'b0']);
    await qemuImg(['bitmap', '--add', '-g', '4k', '--disable', src, 'b1']);
    await qemuImg(['bitmap', '--add', '-g', '1M', src, 'b2']);
    await qemuIo(src, ['write -P 7 1M 64k', 'write -P 8 10000 1', 'write -P 9 50M 3M']);
    await qemuImg(['bitmap', '--enable', src, 'b1']);
    await qemuIo(src, ['write -P 3 5M 3000']);
    await qemuImg(['bitmap', '--disable', src, 'b2']);
    const p = new Pair('convert');
    for (const extra of [[], ['-o', 'cluster_size=4k']]) {
      await p.step(['convert', '--bitmaps', '-O', 'qcow2', ...extra, src, '@']);
      for (const b of ['b0', 'b1', 'b2']) {
        expect(await dirtyMap(p.v, b)).toEqual(await dirtyMap(src, b));
      }
      await checkClean(p.v);
    }
    // What measure reserves for them (qcow2_get_persistent_dirty_bitmap_size).
    const srcDev = await openImage(src, { format: 'qcow2' });
    if (!isQcow2(srcDev)) throw new Error('not qcow2');
    for (const cs of [65536, 4096]) {
      const out = await qemuImg(['measure', '-O', 'qcow2', '-o', `cluster_size=${cs}`, src]);
      const want = Number(/bitmaps size: (\d+)/.exec(out)![1]);
      expect(Number(await persistentBitmapsSize(srcDev, cs))).toBe(want);
    }
    await srcDev.close();
    // Into an existing image (-n): its own bitmaps stay and track nothing of the copy.
    await qemuImg(['bitmap', '--remove', p.q, 'b1']);
    await p.copyFrom(p.q);
    await p.step(['convert', '-n', '--bitmaps', '-O', 'qcow2', src, '@']); // b0 exists: fails
    await qemuImg(['bitmap', '--remove', p.q, 'b0']);
    await qemuImg(['bitmap', '--remove', p.q, 'b2']);
    await p.copyFrom(p.q);
    await p.step(['convert', '-n', '--bitmaps', '-O', 'qcow2', src, '@']);
    // Refusals.
    const raw = new Pair('convert-raw');
    await raw.step(['convert', '--bitmaps', '-O', 'raw', src, '@'], false);
    await raw.step(['convert', '--skip-broken-bitmaps', '-O', 'qcow2', src, '@'], false);
    await raw.step(['convert', '--bitmaps', '-O', 'qcow2', src, src, '@'], false);
    await raw.step(['convert', '--bitmaps', '-O', 'qcow2', '-o', 'compat=0.10', src, '@'], false);
    // Inconsistent bitmaps: refused, or skipped with a warning.
    await qemuIo(src, ['sigraise 9']).catch(() => undefined);
    const broken = new Pair('convert-broken');
    expect((await broken.step(['convert', '--bitmaps', '-O', 'qcow2', src, '@'], false)).code).toBe(
      1,
    );
    const { stderr } = await broken.step([
      'convert',
      '--bitmaps',
      '--skip-broken-bitmaps',
      '-O',
      'qcow2',
      src,
      '@',
    ]);
    expect(stderr).toContain("warning: Skipping inconsistent bitmap 'b0'");
  });

  it('a writer killed with SIGKILL leaves the bitmaps it tracked in use', async () => {
    for (let round = 0; round < 3; round++) {
      const image = join(dir, `killed-${round}.qcow2`);
      await qemuImg(['create', '-q', '-f', 'qcow2', image, '32M']);
      await qemuImg(['bitmap', '--add', image, 'enabled']);
      await qemuImg(['bitmap', '--add', '--disable', image, 'disabled']);
      await qemuIo(image, ['write 0 1M']);
      const before = await dirtyMap(image, 'disabled');
      await new Promise<void>((resolve, reject) => {
        const child = spawn(process.execPath, [writer, image, String(round + 1)], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let err = '';
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.stdout.once('data', () => setTimeout(() => child.kill('SIGKILL'), 150 + 80 * round));
        child.on('exit', (code, signal) =>
          signal === 'SIGKILL' ? resolve() : reject(new Error(`writer exited ${code}: ${err}`)),
        );
      });
      const flags = Object.fromEntries(bitmapsOf(await info(image)).map((b) => [b.name, b.flags]));
      expect(flags).toEqual({ enabled: ['in-use', 'auto'], disabled: [] });
      expect(await dirtyMap(image, 'disabled')).toEqual(before);
      const check = await run('qemu-img', ['check', '--output=json', image]);
      expect((JSON.parse(check.stdout) as Record<string, number>)['corruptions'] ?? 0).toBe(0);
      const clear = await run('qemu-img', ['bitmap', '--clear', image, 'enabled']);
      expect(clear.stderr).toContain("Bitmap 'enabled' is inconsistent and cannot be used");
    }
  });

  it('a writer dying at any write of its session never leaves a bitmap QEMU trusts wrongly', async () => {
    const base = join(dir, 'crash-base.qcow2');
    await qemuImg(['create', '-q', '-f', 'qcow2', base, '64M']);
    await qemuImg(['bitmap', '--add', base, 'b0']);
    await qemuImg(['bitmap', '--add', '-g', '4k', base, 'b1']);
    await qemuImg(['bitmap', '--add', base, 'off']);
    await qemuIo(base, ['write -P 1 8M 1M']);
    await qemuImg(['bitmap', '--disable', base, 'off']);
    const template = new Uint8Array(await readFile(base));
    const image = join(dir, 'crash.qcow2');
    const writes = [
      { offset: 2 * M, length: 100 },
      { offset: 30 * M, length: 3 * M },
    ];
    let completed = false;
    for (let budget = 0; !completed; budget++) {
      expect(budget).toBeLessThan(400);
      const inner = new MemoryStorage();
      await inner.write(template, 0);
      const storage = new CrashingStorage(inner, budget);
      try {
        const dev = await openQcow2(storage, { filename: image, readOnly: false });
        try {
          for (const w of writes) await dev.write(new Uint8Array(w.length).fill(0xee), w.offset);
        } finally {
          await dev.close().catch(() => undefined);
        }
      } catch {
        /* died */
      }
      completed = !storage.crashed;
      const bytes = new Uint8Array(await inner.size());
      await inner.read(bytes, 0);
      await writeFile(image, bytes);
      const check = await run('qemu-img', ['check', '--output=json', image]);
      const res = JSON.parse(check.stdout) as Record<string, number>;
      expect(res['corruptions'] ?? 0, `budget ${budget}: ${check.stdout}`).toBe(0);
      expect(res['check-errors'], `budget ${budget}`).toBe(0);
      if (completed) expect(res['leaks'] ?? 0).toBe(0);
      for (const b of bitmapsOf(await info(image))) {
        if (b.flags.includes('in-use')) continue;
        const map = await dirtyMap(image, b.name);
        if (b.name === 'off') {
          expect(map, `budget ${budget}`).toEqual([[8 * M, M]]);
          continue;
        }
        // Trusted by QEMU: every write that reached the disk must be dirty.
        const dev = await openImage(image, { format: 'qcow2' });
        for (const w of writes) {
          const data = new Uint8Array(w.length);
          await dev.read(data, w.offset);
          if (data[0] !== 0xee) continue;
          const g = b.granularity;
          const start = Math.floor(w.offset / g) * g;
          const covered = map.some(([o, l]) => o <= start && o + l >= w.offset + w.length);
          expect(covered, `budget ${budget} ${b.name} ${JSON.stringify(map)}`).toBe(true);
        }
        await dev.close();
      }
    }
  });
});
