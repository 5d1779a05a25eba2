// qemu-img convert parity: for a matrix of sources (qemu-img/qemu-io made qcow2 variants, sparse,
// random and compressible raw, a 3-deep chain over a raw base) and output modes, vmforge's output
// (a) compares equal to the source with `qemu-img compare`, (b) passes `qemu-img check`, (c) is
// no larger on disk than qemu-img's output for the same options, and (d) is byte-identical to
// qemu-img's when the output is uncompressed and written in order.
import { randomBytes } from 'node:crypto';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWithTools } from '../support/tools.js';
import { binPath, run } from '../support/run.js';
import { filesEqual } from '../support/files.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

const M = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'vmforge-convert-'));

async function q(args: string[]): Promise<void> {
  const r = await run('qemu-img', args, { cwd: dir });
  if (r.code !== 0) throw new Error(`qemu-img ${args.join(' ')}: ${r.stderr}`);
}
async function io(image: string, cmds: string[]): Promise<void> {
  const r = await run('qemu-io', [...cmds.flatMap((c) => ['-c', c]), image], { cwd: dir });
  if (r.code !== 0) throw new Error(`qemu-io: ${r.stdout}${r.stderr}`);
}

interface Source {
  name: string;
  /** Source format for -f (also what compare needs). */
  format: string;
  files: string[];
}

const sources: Source[] = [];

async function makeSources(): Promise<void> {
  // Raw: sparse with scattered data, fully random, and compressible text-like data.
  const sparse = join(dir, 'sparse.raw');
  await q(['create', '-q', '-f', 'raw', sparse, '24M']);
  await io(sparse, [
    'write -P 0x11 0 4k',
    'write -P 0x22 1000000 70000',
    'write -P 0x33 16M 1M',
    'write -P 0x44 24575k 1k',
  ]);
  sources.push({ name: 'sparse raw', format: 'raw', files: ['sparse.raw'] });
  await writeFile(join(dir, 'random.raw'), randomBytes(6 * M + 4096 + 512));
  sources.push({ name: 'random raw, odd size', format: 'raw', files: ['random.raw'] });
  const text = Buffer.alloc(8 * M);
  for (let i = 0; i < text.length; i++)
    text[i] = 'vmforge qcow2 compressible\n'.charCodeAt(i % 27) ^ ((i >> 16) & 3);
  await writeFile(join(dir, 'text.raw'), text);
  sources.push({ name: 'compressible raw', format: 'raw', files: ['text.raw'] });

  const writes = [
    'write -P 0x5a 0 100k',
    'write -P 0x6b 3M 2M',
    'write -z 6M 1M',
    'write -P 0x7c 9999k 17k',
    'discard 3M 64k',
  ];
  for (const [name, opts] of [
    ['v3 64k', []],
    ['v2', ['-o', 'compat=0.10']],
    ['512 B clusters', ['-o', 'cluster_size=512']],
    ['2 MiB clusters', ['-o', 'cluster_size=2M']],
    ['extended L2', ['-o', 'extended_l2=on']],
  ] as const) {
    const file = `${name.replace(/\W+/g, '-')}.qcow2`;
    await q(['create', '-q', '-f', 'qcow2', ...opts, join(dir, file), '16M']);
    await io(join(dir, file), [...writes]);
    sources.push({ name: `qcow2 ${name}`, format: 'qcow2', files: [file] });
  }
  for (const type of ['zlib', 'zstd']) {
    const file = `comp-${type}.qcow2`;
    await q([
      'convert',
      '-q',
      '-c',
      '-O',
      'qcow2',
      '-o',
      `compression_type=${type}`,
      join(dir, 'text.raw'),
      join(dir, file),
    ]);
    sources.push({ name: `qcow2 compressed ${type}`, format: 'qcow2', files: [file] });
  }
  // A 3-deep chain over a raw base.
  await q(['create', '-q', '-f', 'raw', join(dir, 'base.raw'), '16M']);
  await io(join(dir, 'base.raw'), ['write -P 1 0 16M']);
  await q(['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', join(dir, 'mid.qcow2')]);
  await io(join(dir, 'mid.qcow2'), ['write -P 2 1M 3M', 'write -z 8M 1M']);
  await q([
    'create',
    '-q',
    '-f',
    'qcow2',
    '-b',
    'mid.qcow2',
    '-F',
    'qcow2',
    join(dir, 'top.qcow2'),
  ]);
  await io(join(dir, 'top.qcow2'), ['write -P 3 2M 100k', 'write -P 4 12M 64k']);
  sources.push({ name: 'qcow2 chain top', format: 'qcow2', files: ['top.qcow2'] });
  // Concatenation of two sources.
  sources.push({
    name: 'concatenated raw + qcow2',
    format: 'raw',
    files: ['random.raw', 'sparse.raw'],
  });
}

interface Mode {
  name: string;
  args: string[];
  /** Output is deterministic and uncompressed: must equal qemu-img's byte for byte. */
  identical: boolean;
  out: 'raw' | 'qcow2';
}

const modes: Mode[] = [
  { name: 'to raw', args: ['-O', 'raw'], identical: true, out: 'raw' },
  { name: 'to qcow2', args: ['-O', 'qcow2'], identical: true, out: 'qcow2' },
  { name: 'to qcow2 -S 0', args: ['-O', 'qcow2', '-S', '0'], identical: true, out: 'qcow2' },
  {
    name: 'to qcow2 4k clusters, -S 8k',
    args: ['-O', 'qcow2', '-o', 'cluster_size=4k', '-S', '8k'],
    identical: true,
    out: 'qcow2',
  },
  {
    name: 'to qcow2 v2 extended options',
    args: ['-O', 'qcow2', '-o', 'compat=0.10'],
    identical: true,
    out: 'qcow2',
  },
  { name: 'to qcow2 -c (zlib)', args: ['-O', 'qcow2', '-c'], identical: false, out: 'qcow2' },
  {
    name: 'to qcow2 -c zstd',
    args: ['-O', 'qcow2', '-c', '-o', 'compression_type=zstd'],
    identical: false,
    out: 'qcow2',
  },
  {
    name: 'to qcow2 -W -m 16',
    args: ['-O', 'qcow2', '-W', '-m', '16'],
    identical: false,
    out: 'qcow2',
  },
];

async function ours(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [binPath('vmforge-img'), ...args], { cwd: dir });
}

/**
 * Blocks on disk once written back. Before writeback, ext4 counts a delayed-allocation file's
 * data blocks but not the extent-tree block it will need, while space that fallocate() reserved
 * (vmforge reserves ahead of its writes, src/block/reserve-ahead.ts) is counted in full: only
 * the settled figure compares what the two images cost.
 */
async function allocated(file: string): Promise<number> {
  const fh = await open(join(dir, file), 'r');
  try {
    await fh.datasync();
    return (await fh.stat()).blocks * 512;
  } finally {
    await fh.close();
  }
}

describeWithTools(['qemu-img', 'qemu-io'], 'convert matches qemu-img 7.2', () => {
  beforeAll(makeSources, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('every source in every mode', async () => {
    const failures: string[] = [];
    let n = 0;
    for (const src of sources) {
      for (const mode of modes) {
        if (mode.args.includes('-c') && src.files.length > 1) continue;
        const tag = `${n++}`;
        const ref = `ref-${tag}.out`;
        const out = `our-${tag}.out`;
        const args = ['convert', '-f', src.format, ...mode.args, ...src.files];
        await q([...args, join(dir, ref)]);
        const r = await ours([...args, out]);
        const label = `${src.name} ${mode.name}`;
        if (r.code !== 0) {
          failures.push(`${label}: exit ${r.code}: ${r.stderr}`);
          continue;
        }
        if (src.files.length === 1) {
          const cmp = await run(
            'qemu-img',
            ['compare', '-f', src.format, '-F', mode.out, src.files[0]!, out],
            { cwd: dir },
          );
          if (cmp.code !== 0) failures.push(`${label}: compare ${cmp.code} ${cmp.stdout}`);
        } else {
          const cmp = await run('qemu-img', ['compare', '-F', mode.out, '-f', mode.out, ref, out], {
            cwd: dir,
          });
          if (cmp.code !== 0)
            failures.push(`${label}: compare with qemu-img's output ${cmp.code} ${cmp.stdout}`);
        }
        if (mode.out === 'qcow2') {
          const chk = await run('qemu-img', ['check', out], { cwd: dir });
          if (chk.code !== 0)
            failures.push(`${label}: check ${chk.code} ${chk.stdout}${chk.stderr}`);
        }
        if ((await allocated(out)) > (await allocated(ref))) {
          failures.push(
            `${label}: ${await allocated(out)} bytes on disk > qemu-img's ${await allocated(ref)}`,
          );
        }
        if (mode.identical && !(await filesEqual(join(dir, ref), join(dir, out)))) {
          failures.push(`${label}: not byte-identical to qemu-img's output`);
        }
      }
    }
    expect(failures, failures.join('\n')).toEqual([]);
  });

  it('-B writes only what differs from the new backing file', async () => {
    // The target gets mid.qcow2 as backing; only top's own clusters are copied.
    for (const cmd of [[], ['-S', '0']]) {
      await q([
        'convert',
        '-O',
        'qcow2',
        ...cmd,
        '-B',
        'mid.qcow2',
        '-F',
        'qcow2',
        'top.qcow2',
        'ref-B.qcow2',
      ]);
      const r = await ours([
        'convert',
        '-O',
        'qcow2',
        ...cmd,
        '-B',
        'mid.qcow2',
        '-F',
        'qcow2',
        'top.qcow2',
        'our-B.qcow2',
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(await filesEqual(join(dir, 'ref-B.qcow2'), join(dir, 'our-B.qcow2'))).toBe(true);
      expect(
        (await run('qemu-img', ['compare', 'top.qcow2', 'our-B.qcow2'], { cwd: dir })).code,
      ).toBe(0);
    }
  });

  it('-n writes into an existing target, --target-is-zero skips zeroing', async () => {
    for (const extra of [[], ['--target-is-zero']]) {
      await q(['create', '-q', '-f', 'qcow2', join(dir, 'n-ref.qcow2'), '24M']);
      await q(['create', '-q', '-f', 'qcow2', join(dir, 'n-our.qcow2'), '24M']);
      await q(['convert', '-n', ...extra, '-O', 'qcow2', 'sparse.raw', 'n-ref.qcow2']);
      const r = await ours(['convert', '-n', ...extra, '-O', 'qcow2', 'sparse.raw', 'n-our.qcow2']);
      expect(r.code, r.stderr).toBe(0);
      expect(await filesEqual(join(dir, 'n-ref.qcow2'), join(dir, 'n-our.qcow2'))).toBe(true);
      expect(
        (await run('qemu-img', ['compare', 'sparse.raw', 'n-our.qcow2'], { cwd: dir })).code,
      ).toBe(0);
    }
  });

  it('-l reads an internal snapshot', async () => {
    await q(['create', '-q', '-f', 'qcow2', join(dir, 'sn.qcow2'), '8M']);
    await io(join(dir, 'sn.qcow2'), ['write -P 9 0 1M']);
    await q(['snapshot', '-c', 'first', 'sn.qcow2']);
    await io(join(dir, 'sn.qcow2'), ['write -P 8 0 2M']);
    await q(['convert', '-l', 'first', '-O', 'raw', 'sn.qcow2', 'sn-ref.raw']);
    const r = await ours(['convert', '-l', 'first', '-O', 'raw', 'sn.qcow2', 'sn-our.raw']);
    expect(r.code, r.stderr).toBe(0);
    expect(await filesEqual(join(dir, 'sn-ref.raw'), join(dir, 'sn-our.raw'))).toBe(true);
  });

  it('-p prints the same progress text as qemu-img; --progress=json prints JSON lines', async () => {
    for (const src of ['sparse.raw', 'text.raw']) {
      const ref = await run('qemu-img', ['convert', '-p', '-O', 'qcow2', src, 'p-ref.qcow2'], {
        cwd: dir,
      });
      const our = await ours(['convert', '-p', '-O', 'qcow2', src, 'p-our.qcow2']);
      expect(our.code).toBe(0);
      expect(our.stdout).toBe(ref.stdout);
      expect(ref.stdout).toMatch(/^ {4}\(0\.00\/100%\)\r.*\(100\.00\/100%\)\r\n$/s);
    }
    const json = await ours([
      'convert',
      '--progress=json',
      '-O',
      'qcow2',
      'text.raw',
      'p-json.qcow2',
    ]);
    const lines = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { progress: number });
    expect(lines[0]).toEqual({ progress: 0 });
    expect(lines[lines.length - 1]).toEqual({ progress: 100 });
    expect(lines.every((l, i) => i === 0 || l.progress >= lines[i - 1]!.progress)).toBe(true);
  });

  it('refuses the option combinations qemu-img refuses, with its messages', async () => {
    for (const args of [
      ['-c', '-C', '-O', 'qcow2'],
      ['-S', '0', '-C'],
      ['-C', '--salvage'],
      ['-n', '-o', 'cluster_size=4k'],
      ['--target-is-zero'],
      ['-S', '1000'],
      ['-m', '17'],
      ['-c', '-O', 'raw'],
      ['-O', 'qcow2', '-B', 'mid.qcow2'],
      ['-O', 'qcow2', '-c', '-o', 'preallocation=full'],
      ['-O', 'vmdk99'],
    ]) {
      const refErr = await run('qemu-img', ['convert', ...args, 'sparse.raw', 'x.out'], {
        cwd: dir,
      });
      const ourErr = await ours(['convert', ...args, 'sparse.raw', 'y.out']);
      expect(ourErr.code, args.join(' ')).toBe(refErr.code);
      expect(ourErr.stderr.replaceAll('y.out', 'x.out')).toBe(
        refErr.stderr.replaceAll('qemu-img:', 'vmforge-img:'),
      );
    }
  });
});
