// Images for the measure / compare / dd interop tests, made by the real qemu-img and qemu-io:
// sparse and random raw (also of a size that is not a whole number of sectors), qcow2 of several
// cluster sizes and refcount widths, v2 and v3, extended L2, zlib and zstd compressed clusters,
// a raw <- qcow2 <- qcow2 backing chain whose top is larger than its backing file, internal
// snapshots, persistent bitmaps, metadata preallocation, 1 TiB sparse, and empty images; plus
// damaged images made with byte patches (truncated header, tables beyond EOF, huge L1, random
// bytes after the magic, random L2 tables, unaligned L2 offsets, a broken bitmap directory, a
// garbage compressed cluster) and an encrypted image without its key.
// Random contents come from a seeded generator so every run builds the same files.

import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export interface MatrixImage {
  /** File name inside the matrix directory. */
  file: string;
  format: 'raw' | 'qcow2';
  /** Has internal snapshots (names listed). */
  snapshots?: string[];
}

export interface Matrix {
  dir: string;
  images: MatrixImage[];
  /** Damaged images: file names, all claiming to be qcow2. */
  damaged: string[];
}

/** xorshift32: deterministic bytes. */
export function pseudoRandom(seed: number, length: number): Buffer {
  let s = seed >>> 0 || 1;
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i += 4) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out.writeUInt32LE(s, i <= length - 4 ? i : length - 4);
  }
  return out;
}

function patch(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

export function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, offset);
    return buf;
  } finally {
    closeSync(fd);
  }
}

function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
}

export function buildMatrix(dir: string, { large = true }: { large?: boolean } = {}): Matrix {
  const run = (cmd: string, ...args: string[]): void => {
    execFileSync(cmd, args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000 });
  };
  const q = (...args: string[]): void => run('qemu-img', ...args);
  const io = (fmt: string, file: string, ...cmds: string[]): void =>
    run('qemu-io', '-f', fmt, ...cmds.flatMap((c) => ['-c', c]), file);
  const images: MatrixImage[] = [];

  // Raw: sparse (holes, data at odd places), random, and a size that is not whole sectors.
  q('create', '-q', '-f', 'raw', 'sparse.raw', '64M');
  io('raw', 'sparse.raw', 'write -P 0x11 0 4k', 'write -P 0x22 1M 100k', 'write -P 0 8M 64k');
  io('raw', 'sparse.raw', 'write -P 0x33 63M 1M');
  images.push({ file: 'sparse.raw', format: 'raw' });
  writeFileSync(join(dir, 'random.raw'), pseudoRandom(1, 6 * 1024 * 1024));
  images.push({ file: 'random.raw', format: 'raw' });
  writeFileSync(join(dir, 'odd.raw'), pseudoRandom(2, 100_000));
  images.push({ file: 'odd.raw', format: 'raw' });
  q('create', '-q', '-f', 'raw', 'empty.raw', '0');
  images.push({ file: 'empty.raw', format: 'raw' });

  // qcow2 of several cluster sizes and refcount widths, with data, zeros and discards.
  const pattern = (file: string): void =>
    io(
      'qcow2',
      file,
      'write -P 0x11 0 64k',
      'write -P 0x22 100000 3000',
      'write -P 0x33 1M 256k',
      'write -z 2M 128k',
      'write -P 0x44 4M 64k',
      'discard 4M 64k',
      'write -P 0x55 15M 1M',
    );
  for (const [name, opts] of [
    ['v3.qcow2', []],
    ['cs512.qcow2', ['-o', 'cluster_size=512']],
    ['cs4k-rb1.qcow2', ['-o', 'cluster_size=4k,refcount_bits=1']],
    ['cs2M-rb64.qcow2', ['-o', 'cluster_size=2M,refcount_bits=64']],
    ['v2.qcow2', ['-o', 'compat=0.10']],
    ['xl2.qcow2', ['-o', 'extended_l2=on,cluster_size=128k']],
  ] as const) {
    q('create', '-q', '-f', 'qcow2', ...opts, name, '16M');
    pattern(name);
    images.push({ file: name, format: 'qcow2' });
  }
  io('qcow2', 'xl2.qcow2', 'write -P 0x66 8M 4k', 'write -z 8M 2k', 'write -P 0x77 9M 32k');

  // Compressed clusters.
  for (const [name, ct] of [
    ['zlib.qcow2', 'zlib'],
    ['zstd.qcow2', 'zstd'],
  ] as const) {
    q('create', '-q', '-f', 'qcow2', '-o', `compression_type=${ct}`, name, '8M');
    io('qcow2', name, 'write -c -P 0x5a 0 128k', 'write -P 0x5b 1M 64k', 'write -c -P 0 2M 64k');
    images.push({ file: name, format: 'qcow2' });
  }

  // Backing chain: raw base (16M) <- qcow2 mid <- qcow2 top (24M, larger than mid).
  q('create', '-q', '-f', 'raw', 'base.raw', '16M');
  io('raw', 'base.raw', 'write -P 0xb1 0 1M', 'write -P 0xb2 8M 64k');
  q('create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'mid.qcow2');
  io('qcow2', 'mid.qcow2', 'write -P 0xa1 512k 1M', 'write -z 8M 64k');
  q('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2', '24M');
  io('qcow2', 'top.qcow2', 'write -P 0xc1 1M 64k', 'write -z 2M 64k', 'write -P 0xc3 20M 64k');
  images.push({ file: 'mid.qcow2', format: 'qcow2' }, { file: 'top.qcow2', format: 'qcow2' });

  // Internal snapshots: data before and after.
  q('create', '-q', '-f', 'qcow2', 'snaps.qcow2', '8M');
  io('qcow2', 'snaps.qcow2', 'write -P 1 0 1M');
  q('snapshot', '-c', 'first', 'snaps.qcow2');
  io('qcow2', 'snaps.qcow2', 'write -P 2 2M 3M', 'write -z 0 64k');
  q('snapshot', '-c', 'second', 'snaps.qcow2');
  io('qcow2', 'snaps.qcow2', 'discard 2M 1M');
  images.push({ file: 'snaps.qcow2', format: 'qcow2', snapshots: ['first', 'second'] });

  // Persistent bitmaps of several granularities (and a v2 image cannot have any).
  q('create', '-q', '-f', 'qcow2', 'bitmaps.qcow2', '16M');
  io('qcow2', 'bitmaps.qcow2', 'write -P 1 0 64k');
  q('bitmap', '--add', 'bitmaps.qcow2', 'b0');
  q('bitmap', '--add', '-g', '512', 'bitmaps.qcow2', 'fine');
  q('bitmap', '--add', '-g', '2M', '--disable', 'bitmaps.qcow2', 'a-much-longer-bitmap-name-é');
  images.push({ file: 'bitmaps.qcow2', format: 'qcow2' });

  // Metadata preallocation (data clusters that are file holes read as zeros).
  q('create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', 'prealloc.qcow2', '4M');
  io('qcow2', 'prealloc.qcow2', 'write -P 9 64k 64k');
  images.push({ file: 'prealloc.qcow2', format: 'qcow2' });

  q('create', '-q', '-f', 'qcow2', 'empty.qcow2', '0');
  images.push({ file: 'empty.qcow2', format: 'qcow2' });

  if (large) {
    q('create', '-q', '-f', 'qcow2', 'tib.qcow2', '1T');
    io('qcow2', 'tib.qcow2', 'write -P 1 0 64k', 'write -P 2 549755813888 4k');
    io('qcow2', 'tib.qcow2', 'write -P 3 1099511562240 64k');
    images.push({ file: 'tib.qcow2', format: 'qcow2' });
  }

  return { dir, images, damaged: buildDamaged(dir, q, io) };
}

/** Byte-patched copies of a healthy qcow2 image. */
function buildDamaged(
  dir: string,
  q: (...args: string[]) => void,
  io: (fmt: string, file: string, ...cmds: string[]) => void,
): string[] {
  q('create', '-q', '-f', 'qcow2', 'healthy.qcow2', '64M');
  io('qcow2', 'healthy.qcow2', 'write -P 1 0 1M', 'write -P 2 32M 64k');
  const healthy = readAt(join(dir, 'healthy.qcow2'), 0, 2 * 1024 * 1024);
  const l1 = Number(healthy.readBigUInt64BE(40));
  const l2 = Number(healthy.readBigUInt64BE(l1) & 0x00ff_ffff_ffff_fe00n);
  const out: string[] = [];
  const variant = (name: string, edit: (path: string) => void): void => {
    execFileSync('cp', ['healthy.qcow2', name], { cwd: dir });
    edit(join(dir, name));
    out.push(name);
  };
  variant('trunc-header.qcow2', (p) => writeFileSync(p, healthy.subarray(0, 50)));
  variant('l1-beyond-eof.qcow2', (p) => patch(p, 40, u64(0x7f00_0000n)));
  variant('reftable-beyond-eof.qcow2', (p) => patch(p, 48, u64(0x7f00_0000n)));
  variant('l1-huge.qcow2', (p) => patch(p, 36, Buffer.from([0x7f, 0xff, 0xff, 0xff])));
  variant('random-after-magic.qcow2', (p) => patch(p, 4, pseudoRandom(3, 4000)));
  // Random header fields behind a valid magic and version 3.
  variant('random-header.qcow2', (p) => patch(p, 8, pseudoRandom(4, 96)));
  variant('l2-random.qcow2', (p) => patch(p, l2, pseudoRandom(5, 65536)));
  variant('l1-unaligned.qcow2', (p) => patch(p, l1, u64(0x8000_0000_0003_0200n)));
  variant('l2-beyond-eof.qcow2', (p) => patch(p, l2, u64(0x8000_0000_7f00_0000n)));
  // A snapshot table far beyond the end of the file.
  variant('snapshots-beyond-eof.qcow2', (p) => {
    patch(p, 60, Buffer.from([0, 0, 0, 1]));
    patch(p, 64, u64(0x10_0000_0000n));
  });

  // A compressed cluster whose deflate stream is garbage: reads fail with EIO.
  q('create', '-q', '-f', 'qcow2', 'compressed-garbage.qcow2', '4M');
  io('qcow2', 'compressed-garbage.qcow2', 'write -P 1 0 64k', 'write -c -P 2 1M 64k');
  {
    const path = join(dir, 'compressed-garbage.qcow2');
    const cl1 = Number(readAt(path, 40, 8).readBigUInt64BE(0));
    const cl2 = Number(readAt(path, cl1, 8).readBigUInt64BE(0) & 0x00ff_ffff_ffff_fe00n);
    // Guest cluster 16 (1 MiB): compressed entry, host offset in bits 0..53 (64 KiB clusters).
    const entry = readAt(path, cl2 + 16 * 8, 8).readBigUInt64BE(0);
    const host = Number(entry & ((1n << 54n) - 1n));
    patch(path, host, pseudoRandom(6, 512));
    out.push('compressed-garbage.qcow2');
  }

  // Encrypted (AES) without the key: qemu-img cannot open it for data either.
  q(
    'create',
    '-q',
    '-f',
    'qcow2',
    '--object',
    'secret,id=sec0,data=vmforge',
    '-o',
    'encrypt.format=aes,encrypt.key-secret=sec0',
    'aes-nokey.qcow2',
    '4M',
  );
  out.push('aes-nokey.qcow2');

  // A bitmap directory with a broken entry (measure reads it for "bitmaps size").
  q('create', '-q', '-f', 'qcow2', 'bitmap-broken.qcow2', '16M');
  q('bitmap', '--add', 'bitmap-broken.qcow2', 'b0');
  {
    const path = join(dir, 'bitmap-broken.qcow2');
    const hdr = readAt(path, 0, 112);
    let off = hdr.readUInt32BE(100);
    for (;;) {
      const ext = readAt(path, off, 8);
      const type = ext.readUInt32BE(0);
      if (type === 0) throw new Error('no bitmaps extension');
      if (type === 0x23852875) {
        const dirOffset = Number(readAt(path, off + 8 + 16, 8).readBigUInt64BE(0));
        patch(path, dirOffset + 17, Buffer.from([60])); // granularity_bits = 60
        break;
      }
      off += 8 + ((ext.readUInt32BE(4) + 7) & ~7);
    }
    out.push('bitmap-broken.qcow2');
  }
  return out;
}
