// Data written through the vmforge library reads back identically through qemu-img/qemu-io and
// the image passes `qemu-img check`; data written by qemu-io reads back identically through
// vmforge. Covers random writes, zero writes (with and without unmap), discards, partial
// clusters over a backing file, subclusters, small and large clusters, v2 and v3.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { createImage, openImage, type CreateImageOptions } from '../../src/index.js';
import { describeWithTools } from '../support/tools.js';
import { run } from '../support/run.js';
import { tempDir } from '../support/tmp.js';

const SIZE = 8 * 1024 * 1024;

/** Deterministic pseudo-random generator (LCG), so failures reproduce. */
function rng(seed: number) {
  let s = seed >>> 0;
  return (n: number) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s % n;
  };
}

interface Variant {
  name: string;
  create: CreateImageOptions;
  backing?: boolean;
}

const variants: Variant[] = [
  { name: 'v3 64k', create: {} },
  { name: 'v3 64k over a qcow2 backing file', create: {}, backing: true },
  { name: 'v2 (compat=0.10)', create: { version: 2 } },
  { name: 'v2 over a backing file', create: { version: 2 }, backing: true },
  { name: 'extended L2', create: { extendedL2: true } },
  {
    name: 'extended L2, 16k clusters, over a backing file',
    create: { extendedL2: true, clusterSize: 16384, refcountBits: 2 },
    backing: true,
  },
  { name: '512 B clusters, refcount_bits=1', create: { clusterSize: 512, refcountBits: 1 } },
  {
    name: '2 MiB clusters, refcount_bits=64',
    create: { clusterSize: 2 * 1024 * 1024, refcountBits: 64 },
  },
  { name: 'lazy refcounts', create: { lazyRefcounts: true } },
];

async function qemuRaw(dir: string, image: string): Promise<Buffer> {
  const out = join(dir, 'out.raw');
  const r = await run('qemu-img', ['convert', '-O', 'raw', image, out]);
  expect(r.code, r.stderr).toBe(0);
  return readFile(out);
}

describeWithTools(['qemu-img', 'qemu-io'], 'qcow2 data interchange with QEMU', () => {
  it.each(variants)('vmforge writes, QEMU reads: $name', async (v) => {
    const dir = await tempDir();
    const image = join(dir, 'w.qcow2');
    const model = new Uint8Array(SIZE);
    if (v.backing) {
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), String(SIZE)]);
      await run('qemu-io', ['-c', 'write -P 0x5a 0 8M', join(dir, 'base.qcow2')]);
      model.fill(0x5a);
    }
    await createImage(image, {
      format: 'qcow2',
      size: SIZE,
      ...v.create,
      ...(v.backing ? { backingFile: 'base.qcow2', backingFormat: 'qcow2' } : {}),
    });
    const dev = await openImage(image, { readOnly: false });
    const cs = v.create.clusterSize ?? 65536;
    const rand = rng(42);
    for (let i = 0; i < 200; i++) {
      const op = rand(10);
      const off = rand(SIZE - 1);
      const len = Math.min(SIZE - off, 1 + rand(3 * cs + 5000));
      if (op < 6) {
        const b = new Uint8Array(len);
        for (let j = 0; j < len; j++) b[j] = (i * 7 + j) & 0xff;
        await dev.write(b, off);
        model.set(b, off);
      } else if (op < 8) {
        await dev.writeZeroes(off, len, { mayUnmap: op === 7 });
        model.fill(0, off, off + len);
      } else {
        await dev.discard(off, len);
        // QEMU semantics: whole clusters read as zero afterwards (v3), nothing changes for v2
        // over a backing file (discarding would expose backing data).
        const s = Math.ceil(off / cs) * cs;
        const e = Math.floor((off + len) / cs) * cs;
        if (e > s && !(v.create.version === 2 && v.backing)) model.fill(0, s, e);
      }
    }
    const back = new Uint8Array(SIZE);
    await dev.read(back, 0);
    expect(Buffer.compare(back, model)).toBe(0);
    await dev.close();

    const check = await run('qemu-img', ['check', image]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(Buffer.compare(await qemuRaw(dir, image), model)).toBe(0);
  });

  it.each(variants)('QEMU writes, vmforge reads: $name', async (v) => {
    const dir = await tempDir();
    const image = join(dir, 'q.qcow2');
    const opts: string[] = [];
    if (v.create.version === 2) opts.push('compat=0.10');
    if (v.create.extendedL2) opts.push('extended_l2=on');
    if (v.create.clusterSize) opts.push(`cluster_size=${v.create.clusterSize}`);
    if (v.create.refcountBits) opts.push(`refcount_bits=${v.create.refcountBits}`);
    if (v.create.lazyRefcounts) opts.push('lazy_refcounts=on');
    if (v.backing) {
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), String(SIZE)]);
      await run('qemu-io', ['-c', 'write -P 0x5a 0 8M', join(dir, 'base.qcow2')]);
      opts.push('backing_file=base.qcow2', 'backing_fmt=qcow2');
    }
    await run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      ...(opts.length ? ['-o', opts.join(',')] : []),
      image,
      String(SIZE),
    ]);
    const rand = rng(7);
    const cmds: string[] = [];
    // Compressed clusters first (qemu-io cannot compress over allocated clusters), then
    // random writes, zero writes and discards, some of them over the compressed clusters.
    const cs = v.create.clusterSize ?? 65536;
    for (let c = 1; c < SIZE / cs; c += Math.max(1, Math.floor(SIZE / cs / 6))) {
      cmds.push(`write -c -P ${c % 250} ${c * cs} ${cs}`);
    }
    for (let i = 0; i < 60; i++) {
      const op = rand(7);
      const off = rand(SIZE / 512 - 1) * 512;
      const len = Math.min(SIZE - off, 512 * (1 + rand(400)));
      if (op < 4) cmds.push(`write -P ${i % 250} ${off} ${len}`);
      else if (op < 5) cmds.push(`write -z ${off} ${len}`);
      else if (op < 6) cmds.push(`write -z -u ${off} ${len}`);
      else cmds.push(`discard ${off} ${len}`);
    }
    const args = cmds.flatMap((c) => ['-c', c]);
    const io = await run('qemu-io', [...args, image]);
    expect(io.code, io.stdout + io.stderr).toBe(0);
    const want = await qemuRaw(dir, image);
    const dev = await openImage(image);
    const got = new Uint8Array(SIZE);
    await dev.read(got, 0);
    await dev.close();
    expect(Buffer.compare(got, want)).toBe(0);
  });

  it('reads zlib- and zstd-compressed clusters written by qemu-img convert -c', async () => {
    const dir = await tempDir();
    const raw = join(dir, 'src.raw');
    const data = new Uint8Array(4 * 1024 * 1024);
    const rand = rng(3);
    for (let i = 0; i < data.length; i++) data[i] = i % 3000 < 1500 ? (i >> 8) & 0xff : rand(256);
    await writeFile(raw, data);
    for (const type of ['zlib', 'zstd']) {
      const out = join(dir, `c-${type}.qcow2`);
      const r = await run('qemu-img', [
        'convert',
        '-c',
        '-O',
        'qcow2',
        '-o',
        `compression_type=${type}`,
        raw,
        out,
      ]);
      expect(r.code, r.stderr).toBe(0);
      const dev = await openImage(out);
      const got = new Uint8Array(data.length);
      // Unaligned small reads exercise partial compressed clusters.
      for (let off = 0; off < data.length; off += 70001) {
        await dev.read(got.subarray(off, Math.min(data.length, off + 70001)), off);
      }
      await dev.close();
      expect(Buffer.compare(got, data)).toBe(0);
    }
  });
});
