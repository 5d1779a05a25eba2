// The hostile-input battery: damaged qcow2 images built from qemu-img-made images plus byte
// patches, mirroring qemu-iotests 036, 039, 060, 080, 108, 112, 214 and 261 where they apply.
// Used by the check, info and map tests. Needs qemu-img and qemu-io on PATH.
//
//   const img = await makeCorruptImage('l2-into-l1', dir);   // { name, description, path, ... }
//   const all = await makeCorruptImages(dir);                 // every image, one subdirectory each
//
// Images are small (64 MiB virtual, sparse) except where a case needs a big file, and every
// build is deterministic (fixed patterns, a seeded PRNG for random bytes).

import { mkdir, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './run.js';

export interface CorruptImage {
  /** Stable name, e.g. 'l2-into-l1'. */
  name: string;
  /** What is wrong with the image. */
  description: string;
  /** The qemu-iotests case it mirrors, if any (e.g. '060 Testing L2 reference into L1'). */
  iotest: string | undefined;
  /** The image to give to the tool under test. */
  path: string;
  /** qemu-img 7.2 never returns on this image (a backing-file loop): never run it untimed. */
  qemuHangs: boolean;
  /** Building it grew a large sparse file (tests may want to skip byte comparisons). */
  bigFile: boolean;
}

interface Spec {
  name: string;
  description: string;
  iotest?: string;
  qemuHangs?: boolean;
  bigFile?: boolean;
  /** Build the image in `b.dir`; return its file name (relative to the directory). */
  build(b: Builder): Promise<string>;
}

// ---------------------------------------------------------------------------------------------
// Byte helpers

export function u64(v: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v));
  return b;
}
export function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0);
  return b;
}
export function u16(v: number): Uint8Array {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, v);
  return b;
}
/** Bytes from hex pairs: hexBytes('80 00 00 00 00 03 00 00'). */
export function hexBytes(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}
const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);

/** COPIED flag | host offset: a standard L1/L2 entry. */
const entry = (offset: number | bigint, copied = true): Uint8Array =>
  u64((copied ? 1n << 63n : 0n) | BigInt(offset));

// Header field offsets (qcow2.rst "Header").
const H = {
  version: 4,
  backingFileOffset: 8,
  backingFileSize: 16,
  clusterBits: 20,
  size: 24,
  cryptMethod: 32,
  l1Size: 36,
  l1TableOffset: 40,
  refcountTableOffset: 48,
  refcountTableClusters: 56,
  nbSnapshots: 60,
  snapshotsOffset: 64,
  incompatibleFeatures: 72,
  compatibleFeatures: 80,
  autoclearFeatures: 88,
  refcountOrder: 96,
  headerLength: 100,
} as const;

const TIB = 2 ** 40;
const FEATURE_TABLE = 0x6803f857;

// ---------------------------------------------------------------------------------------------
// The builder each spec gets

class Builder {
  readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  async qemuImg(...args: string[]): Promise<void> {
    const r = await run('qemu-img', args, { cwd: this.dir, timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`qemu-img ${args.join(' ')} failed: ${r.stderr}`);
  }

  /** qemu-io -f <fmt> -c ... on `name`; `allowKill` for writers that kill themselves. */
  async qemuIo(name: string, cmds: string[], fmt = 'qcow2', allowKill = false): Promise<void> {
    const args = ['-f', fmt, ...cmds.flatMap((c) => ['-c', c]), name];
    const r = await run('qemu-io', args, { cwd: this.dir, timeoutMs: 60_000 });
    if (r.code !== 0 && !allowKill)
      throw new Error(`qemu-io ${args.join(' ')} failed: ${r.stderr}`);
    if (/failed|error/i.test(r.stdout + r.stderr) && !allowKill) {
      throw new Error(`qemu-io ${args.join(' ')}: ${r.stdout}${r.stderr}`);
    }
  }

  /** qemu-img create -f qcow2 [-o opts] name size. */
  async create(name: string, size = '64M', opts = '', extra: string[] = []): Promise<string> {
    await this.qemuImg(
      'create',
      '-q',
      '-f',
      'qcow2',
      ...(opts ? ['-o', opts] : []),
      ...extra,
      name,
      size,
    );
    return name;
  }

  async poke(name: string, offset: number, bytes: Uint8Array): Promise<void> {
    const fh = await open(this.path(name), 'r+');
    try {
      await fh.write(bytes, 0, bytes.length, offset);
    } finally {
      await fh.close();
    }
  }

  async peek(name: string, offset: number, length: number): Promise<Uint8Array> {
    const fh = await open(this.path(name), 'r');
    try {
      const b = new Uint8Array(length);
      await fh.read(b, 0, length, offset);
      return b;
    } finally {
      await fh.close();
    }
  }

  async peekU64(name: string, offset: number): Promise<number> {
    return Number(new DataView((await this.peek(name, offset, 8)).buffer).getBigUint64(0));
  }

  async peekU32(name: string, offset: number): Promise<number> {
    return new DataView((await this.peek(name, offset, 4)).buffer).getUint32(0);
  }

  async truncate(name: string, size: number): Promise<void> {
    await truncate(this.path(name), size);
  }

  /** Offset of the first refcount block (reftable entry 0). */
  async refblock0(name: string): Promise<number> {
    return this.peekU64(name, await this.peekU64(name, H.refcountTableOffset));
  }

  /** Host offset of the L2 table for L1 index `i`. */
  async l2Offset(name: string, i = 0): Promise<number> {
    const l1 = await this.peekU64(name, H.l1TableOffset);
    const e = new DataView((await this.peek(name, l1 + 8 * i, 8)).buffer).getBigUint64(0);
    return Number(e & 0x00ff_ffff_ffff_fe00n);
  }

  /** Set a 16-bit refcount (refcount_bits=16, first refblock). */
  async setRefcount16(name: string, cluster: number, value: number): Promise<void> {
    await this.poke(name, (await this.refblock0(name)) + 2 * cluster, u16(value));
  }

  /** Replace the header extensions (after the 112-byte v3 header), keeping the others. */
  async editExtensions(
    name: string,
    edit: (exts: { type: number; data: Uint8Array }[]) => { type: number; data: Uint8Array }[],
  ): Promise<void> {
    const headerLength = await this.peekU32(name, H.headerLength);
    const cluster = await this.peek(name, 0, 65536);
    const view = new DataView(cluster.buffer);
    const exts: { type: number; data: Uint8Array }[] = [];
    let p = headerLength;
    for (;;) {
      const type = view.getUint32(p);
      const len = view.getUint32(p + 4);
      if (type === 0) break;
      exts.push({ type, data: cluster.slice(p + 8, p + 8 + len) });
      p += 8 + Math.ceil(len / 8) * 8;
    }
    const backingOffset = Number(view.getBigUint64(H.backingFileOffset));
    if (backingOffset) throw new Error('editExtensions: images with a backing file unsupported');
    const out = new Uint8Array(65536 - headerLength);
    const ov = new DataView(out.buffer);
    let q = 0;
    for (const e of edit(exts)) {
      ov.setUint32(q, e.type);
      ov.setUint32(q + 4, e.data.length);
      out.set(e.data, q + 8);
      q += 8 + Math.ceil(e.data.length / 8) * 8;
    }
    await this.poke(name, headerLength, out);
  }
}

/** A deterministic PRNG (mulberry32) for "random bytes after the magic". */
function randomBytes(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let a = seed >>> 0;
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((t ^ (t >>> 14)) >>> 0) & 0xff;
  }
  return out;
}

/** A v3 64 MiB image with 64 KiB of data at guest 0: L2 at 0x40000, data at 0x50000. */
async function withData(b: Builder, opts = '', cmds = ['write -P 0x2a 0 64k']): Promise<string> {
  await b.create('t.qcow2', '64M', opts);
  await b.qemuIo('t.qcow2', cmds);
  return 't.qcow2';
}

// Layout of a fresh default image (qemu-img create -f qcow2, 64 KiB clusters).
const RT = 0x10000; // refcount table
const RB = 0x20000; // refcount block 0
const L1 = 0x30000;
const L2 = 0x40000; // first L2 table once something is written
const DATA = 0x50000; // first data cluster

// ---------------------------------------------------------------------------------------------
// The battery

const SPECS: Spec[] = [
  // --- The header itself ----------------------------------------------------------------------
  {
    name: 'magic-only',
    description: 'the file is just the qcow2 magic',
    async build(b) {
      await writeFile(b.path('t.qcow2'), hexBytes('514649fb'));
      return 't.qcow2';
    },
  },
  {
    name: 'truncated-header',
    description: 'a valid header cut off after 48 bytes',
    async build(b) {
      await b.create('t.qcow2');
      await b.truncate('t.qcow2', 48);
      return 't.qcow2';
    },
  },
  {
    name: 'random-after-magic',
    description: 'the qcow2 magic followed by 256 KiB of random bytes',
    async build(b) {
      const bytes = randomBytes(0x5eed, 256 * 1024);
      bytes.set(hexBytes('514649fb'), 0);
      await writeFile(b.path('t.qcow2'), bytes);
      return 't.qcow2';
    },
  },
  {
    name: 'version-1',
    description: 'header version 1',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.version, u32(1));
      return 't.qcow2';
    },
  },
  {
    name: 'version-4',
    description: 'header version 4',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.version, u32(4));
      return 't.qcow2';
    },
  },
  {
    name: 'cluster-bits-8',
    description: 'cluster_bits 8 (256-byte clusters)',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.clusterBits, u32(8));
      return 't.qcow2';
    },
  },
  {
    name: 'cluster-bits-63',
    description: 'cluster_bits 63',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.clusterBits, u32(63));
      return 't.qcow2';
    },
  },
  {
    name: 'header-length-huge',
    description: 'header_length 0xffffffff',
    iotest: '080 Huge header size',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.headerLength, u32(0xffffffff));
      return 't.qcow2';
    },
  },
  {
    name: 'backing-offset-beyond-cluster',
    description: 'backing_file_offset beyond the first cluster',
    iotest: '080 Huge unknown header extension',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.backingFileOffset, u64(0xffffffffffffffffn));
      return 't.qcow2';
    },
  },
  {
    name: 'header-extension-too-large',
    description: 'an unknown header extension claiming 2 GiB',
    iotest: '080 Huge unknown header extension',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', 112, hexBytes('12345678 7fffffff'));
      return 't.qcow2';
    },
  },
  {
    name: 'backing-name-too-long',
    description: 'backing_file_size 0xffffffff',
    iotest: '080 Invalid backing file size',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.backingFileOffset, u64(0x1000));
      await b.poke('t.qcow2', H.backingFileSize, u32(0xffffffff));
      return 't.qcow2';
    },
  },
  {
    name: 'unknown-incompat-bit',
    description: 'incompatible feature bit 63 and no feature name table',
    iotest: '036 Image with unknown incompatible feature bit',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.incompatibleFeatures, u64(1n << 63n));
      await b.editExtensions('t.qcow2', (e) => e.filter((x) => x.type !== FEATURE_TABLE));
      return 't.qcow2';
    },
  },
  {
    name: 'unknown-incompat-bit-named',
    description: 'incompatible feature bit 63, named "Test feature" in the feature table',
    iotest: '036 Image with unknown incompatible feature bit',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.incompatibleFeatures, u64(1n << 63n));
      // printf "\x00\x3f%s" "Test feature" | qcow2.py add-header-ext-stdio 0x6803f857
      const data = new Uint8Array([0x00, 0x3f, ...ascii('Test feature')]);
      await b.editExtensions('t.qcow2', (e) => [
        ...e.filter((x) => x.type !== FEATURE_TABLE),
        { type: FEATURE_TABLE, data },
      ]);
      return 't.qcow2';
    },
  },
  {
    name: 'unknown-incompat-bits-some-named',
    description: 'incompatible bits 61-63, the table naming 61 and 62',
    iotest: '036 Image with multiple incompatible feature bits',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.incompatibleFeatures, u64(7n << 61n));
      const entry48 = (bit: number, name: string) => {
        const d = new Uint8Array(48);
        d[1] = bit;
        d.set(ascii(name), 2);
        return d;
      };
      const data = new Uint8Array([...entry48(61, 'test1'), ...entry48(62, 'test2')]);
      await b.editExtensions('t.qcow2', (e) => [
        ...e.filter((x) => x.type !== FEATURE_TABLE),
        { type: FEATURE_TABLE, data },
      ]);
      return 't.qcow2';
    },
  },
  {
    name: 'unknown-autoclear-bit',
    description: 'autoclear feature bit 63 (cleared by a read-write open)',
    iotest: '036 Create image with unknown autoclear feature bit',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', H.autoclearFeatures, u64(1n << 63n));
      return 't.qcow2';
    },
  },
  {
    name: 'compression-type-without-bit',
    description: 'compression_type zstd without the compression incompatible bit',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', 104, new Uint8Array([1]));
      return 't.qcow2';
    },
  },

  // --- Table pointers in the header -------------------------------------------------------------
  {
    name: 'reftable-clusters-absurd',
    description: 'refcount_table_clusters 0xffffffff',
    iotest: '080 Huge refcount table size',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.refcountTableClusters, u32(0xffffffff));
      return 't.qcow2';
    },
  },
  {
    name: 'reftable-clusters-over-limit',
    description: 'refcount_table_clusters 0x20001 (just over 8 MiB of table)',
    iotest: '080 Huge refcount table size',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.refcountTableClusters, u32(0x20001));
      return 't.qcow2';
    },
  },
  {
    name: 'reftable-offset-unaligned',
    description: 'refcount_table_offset 0x1234567890abcdef',
    iotest: '080 Misaligned refcount table',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.refcountTableOffset, u64(0x1234567890abcdefn));
      return 't.qcow2';
    },
  },
  {
    name: 'reftable-offset-huge',
    description: 'refcount_table_offset 0xffffffffffff0000 with 127 clusters',
    iotest: '080 Huge refcount offset',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.refcountTableOffset, u64(0xffffffffffff0000n));
      await b.poke('t.qcow2', H.refcountTableClusters, u32(0x7f));
      return 't.qcow2';
    },
  },
  {
    name: 'reftable-beyond-eof',
    description: 'the refcount table lies 1 TiB into the file, far beyond its end',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', H.refcountTableOffset, u64(TIB));
      return 't.qcow2';
    },
  },
  {
    name: 'reftable-zero-size',
    description: 'refcount_table_clusters 0',
    iotest: '060 Testing zero refcount table size',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.refcountTableClusters, u32(0));
      return 't.qcow2';
    },
  },
  {
    name: 'no-reftable',
    description: 'refcount table offset and size both 0, with data',
    iotest: '108 Repairing an image without any refcount table',
    async build(b) {
      await withData(b, '', ['write -P 42 0 64k']);
      await b.poke('t.qcow2', H.refcountTableOffset, u64(0));
      await b.poke('t.qcow2', H.refcountTableClusters, u32(0));
      return 't.qcow2';
    },
  },
  {
    name: 'l1-size-absurd',
    description: 'l1_size 0xffffffff',
    iotest: '080 Invalid L1 table',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.l1Size, u32(0xffffffff));
      return 't.qcow2';
    },
  },
  {
    name: 'l1-size-over-limit',
    description: 'l1_size 0x7fffffff',
    iotest: '080 Invalid L1 table',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.l1Size, u32(0x7fffffff));
      return 't.qcow2';
    },
  },
  {
    name: 'l1-offset-invalid',
    description: 'l1_table_offset 0x7fffffffffff0000 with 0xffff entries',
    iotest: '080 Invalid L1 table',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.l1TableOffset, u64(0x7fffffffffff0000n));
      await b.poke('t.qcow2', H.l1Size, u32(0xffff));
      return 't.qcow2';
    },
  },
  {
    name: 'l1-offset-unaligned',
    description: 'l1_table_offset 0x1234567890abcdef',
    iotest: '080 Invalid L1 table',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.l1TableOffset, u64(0x1234567890abcdefn));
      await b.poke('t.qcow2', H.l1Size, u32(1));
      return 't.qcow2';
    },
  },
  {
    name: 'l1-too-small',
    description: 'l1_size 0 for a 64 MiB disk',
    iotest: '080 Invalid L1 table (with internal snapshot in the image)',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.l1Size, u32(0));
      return 't.qcow2';
    },
  },
  {
    name: 'l1-beyond-eof',
    description: 'the active L1 table lies 1 TiB into the file, far beyond its end',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', H.l1TableOffset, u64(TIB));
      return 't.qcow2';
    },
  },
  {
    name: 'nb-snapshots-absurd',
    description: 'nb_snapshots 0xffffffff',
    iotest: '080 Invalid snapshot table',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.nbSnapshots, u32(0xffffffff));
      return 't.qcow2';
    },
  },
  {
    name: 'nb-snapshots-over-limit',
    description: 'nb_snapshots 0x7fffffff',
    iotest: '080 Invalid snapshot table',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.nbSnapshots, u32(0x7fffffff));
      return 't.qcow2';
    },
  },
  {
    name: 'snapshot-offset-huge',
    description: 'snapshots_offset 0xffffffffffff0000 with 0xffff snapshots',
    iotest: '080 Invalid snapshot table',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.snapshotsOffset, u64(0xffffffffffff0000n));
      await b.poke('t.qcow2', H.nbSnapshots, u32(0xffff));
      return 't.qcow2';
    },
  },
  {
    name: 'snapshot-offset-unaligned',
    description: 'snapshots_offset 0x1234567890abcdef with no snapshots',
    iotest: '080 Invalid snapshot table',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', H.snapshotsOffset, u64(0x1234567890abcdefn));
      return 't.qcow2';
    },
  },
  {
    name: 'snapshot-table-beyond-eof',
    description: 'one snapshot whose table lies 1 TiB into the file',
    async build(b) {
      await withData(b);
      await b.qemuImg('snapshot', '-c', 'snap', 't.qcow2');
      await b.poke('t.qcow2', H.snapshotsOffset, u64(TIB));
      return 't.qcow2';
    },
  },

  // --- L1 / L2 entries ------------------------------------------------------------------------
  {
    name: 'l2-into-l1',
    description: 'the first L1 entry points at the L1 table itself',
    iotest: '060 Testing L2 reference into L1',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', L1, entry(L1));
      return 't.qcow2';
    },
  },
  {
    name: 'data-into-refblock',
    description: 'an L2 entry maps guest data onto the refcount block',
    iotest: '060 Testing cluster data reference into refcount block',
    async build(b) {
      await b.create('t.qcow2');
      await b.truncate('t.qcow2', L2 + 0x10000);
      await b.poke('t.qcow2', L1, entry(L2));
      await b.poke('t.qcow2', RB + 8, u16(1));
      await b.poke('t.qcow2', L2, entry(RB));
      return 't.qcow2';
    },
  },
  {
    name: 'data-into-inactive-l2',
    description: "an active L2 entry maps data onto a snapshot's L2 table",
    iotest: '060 Testing cluster data reference into inactive L2 table',
    async build(b) {
      await b.create('t.qcow2');
      await b.qemuIo('t.qcow2', ['write -P 1 0 512']);
      await b.qemuImg('snapshot', '-c', 'foo', 't.qcow2');
      await b.qemuIo('t.qcow2', ['write -P 2 0 512']);
      await b.poke('t.qcow2', 0x80000, entry(L2));
      return 't.qcow2';
    },
  },
  {
    name: 'data-into-l1',
    description: 'an L2 entry maps guest data onto the active L1 table',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', L2 + 8, entry(L1));
      return 't.qcow2';
    },
  },
  {
    name: 'data-into-reftable',
    description: 'an L2 entry maps guest data onto the refcount table',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', L2 + 8, entry(RT, false));
      return 't.qcow2';
    },
  },
  {
    name: 'l1-entry-unaligned',
    description: 'an L1 entry with an unaligned L2 table offset (0x42a00)',
    iotest: '060 Testing unaligned L1 entry',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', L1, hexBytes('80000000 00042a00'));
      return 't.qcow2';
    },
  },
  {
    name: 'l2-entry-unaligned',
    description: 'an L2 entry with an unaligned data offset (0x52a00)',
    iotest: '060 Testing unaligned L2 entry',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', L2, hexBytes('80000000 00052a00'));
      return 't.qcow2';
    },
  },
  {
    name: 'prealloc-zero-unaligned',
    description: 'a preallocated zero cluster at an unaligned offset inside the header',
    iotest: '060 Writing to an unaligned preallocated zero cluster',
    async build(b) {
      await withData(b, '', ['write 0 64k', 'discard 0 64k']);
      await b.poke('t.qcow2', L2, hexBytes('80000000 00002a01'));
      return 't.qcow2';
    },
  },
  {
    name: 'l2-beyond-eof',
    description: 'an L1 entry pointing 1 TiB into the file',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', L1 + 8, entry(TIB));
      return 't.qcow2';
    },
  },
  {
    name: 'data-beyond-eof',
    description: 'an L2 entry mapping data 1 TiB into the file',
    iotest: '080 Invalid L2 entry (huge physical offset)',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', L2, hexBytes('800000ff ffff0000'));
      return 't.qcow2';
    },
  },
  {
    name: 'l1-reserved-bits',
    description: 'an L1 entry with reserved bits set',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', L1, u64((1n << 63n) | (1n << 58n) | BigInt(L2) | 0x100n));
      return 't.qcow2';
    },
  },
  {
    name: 'l2-reserved-bits',
    description: 'an L2 entry with reserved bits set',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', L2, u64((1n << 63n) | (1n << 57n) | BigInt(DATA) | 0x2n));
      return 't.qcow2';
    },
  },
  {
    name: 'reftable-reserved-bits',
    description: 'a refcount table entry with reserved bits set',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', RT, u64(RB | 0x1));
      return 't.qcow2';
    },
  },

  // --- Compressed clusters --------------------------------------------------------------------
  {
    name: 'compressed-size-grown',
    description: 'compressed descriptors claiming 8192 sectors, spilling into other clusters',
    iotest: '214 Corrupted size field in compressed cluster descriptor',
    async build(b) {
      await b.create('t.qcow2', '8M', 'cluster_size=2M,compression_type=zlib');
      await b.qemuIo('t.qcow2', ['write -c -P 0x11 0 2M', 'write -c -P 0x11 2M 2M']);
      await b.poke('t.qcow2', 0x800000, hexBytes('7ffe'));
      await b.poke('t.qcow2', 0x800008, hexBytes('7ffe'));
      await b.qemuIo('t.qcow2', ['write -P 0x22 4M 4M']);
      return 't.qcow2';
    },
  },
  {
    name: 'compressed-copied-flag',
    description: 'a compressed cluster descriptor with the COPIED flag',
    async build(b) {
      await withData(b, '', ['write -c -P 0x33 0 64k']);
      const e = await b.peek('t.qcow2', L2, 1);
      await b.poke('t.qcow2', L2, new Uint8Array([e[0]! | 0x80]));
      return 't.qcow2';
    },
  },
  {
    name: 'compressed-beyond-eof',
    description: 'a compressed cluster 1 TiB into the file',
    async build(b) {
      await withData(b, '', ['write -c -P 0x33 0 64k']);
      await b.poke('t.qcow2', L2, u64((1n << 62n) | BigInt(TIB)));
      return 't.qcow2';
    },
  },
  {
    name: 'compressed-huge-offset',
    description: 'a compressed descriptor with COPIED and all offset bits set',
    iotest: '080 Invalid L2 entry (huge physical offset)',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', L2, hexBytes('bfffffff ffff0000'));
      return 't.qcow2';
    },
  },
  {
    name: 'compressed-extl2-bitmap',
    description: 'extended L2: a compressed cluster with a non-zero subcluster bitmap',
    async build(b) {
      await b.create('t.qcow2', '64M', 'extended_l2=on');
      await b.qemuIo('t.qcow2', ['write -c -P 0x44 0 64k']);
      await b.poke('t.qcow2', L2 + 12, u32(1));
      return 't.qcow2';
    },
  },

  // --- Extended L2 bitmaps --------------------------------------------------------------------
  {
    name: 'extl2-alloc-and-zero',
    description: 'extended L2: a subcluster both allocated and zero',
    async build(b) {
      await b.create('t.qcow2', '64M', 'extended_l2=on');
      await b.qemuIo('t.qcow2', ['write -P 0x44 0 64k']);
      await b.poke('t.qcow2', L2 + 8, u32(1));
      return 't.qcow2';
    },
  },
  {
    name: 'extl2-unallocated-with-alloc-bits',
    description: 'extended L2: an unallocated cluster with allocation bits',
    async build(b) {
      await b.create('t.qcow2', '64M', 'extended_l2=on');
      await b.qemuIo('t.qcow2', ['write -P 0x44 0 64k']);
      await b.poke('t.qcow2', L2 + 16 + 12, u32(0xff));
      return 't.qcow2';
    },
  },

  {
    name: 'extl2-prealloc-unaligned',
    description: 'extended L2: an all-zero preallocated cluster at an unaligned offset',
    async build(b) {
      await b.create('t.qcow2', '64M', 'extended_l2=on');
      await b.qemuIo('t.qcow2', ['write -P 0x44 0 128k']);
      await b.poke('t.qcow2', L2 + 16, hexBytes('80000000 00062a00 ffffffff 00000000'));
      return 't.qcow2';
    },
  },

  // --- Refcounts ------------------------------------------------------------------------------
  {
    name: 'leaked-cluster',
    description: 'cluster 10 has refcount 1 and no reference',
    async build(b) {
      await withData(b);
      await b.truncate('t.qcow2', 11 * 0x10000);
      await b.setRefcount16('t.qcow2', 10, 1);
      return 't.qcow2';
    },
  },
  {
    name: 'refcount-too-high',
    description: 'a data cluster with refcount 2 and one reference',
    async build(b) {
      await withData(b);
      await b.setRefcount16('t.qcow2', DATA / 0x10000, 2);
      return 't.qcow2';
    },
  },
  {
    name: 'refcount-too-high-l2',
    description: 'an L2 table with refcount 2 and one reference (COPIED set in L1)',
    async build(b) {
      await withData(b);
      await b.setRefcount16('t.qcow2', L2 / 0x10000, 2);
      return 't.qcow2';
    },
  },
  {
    name: 'refcount-zero-in-use',
    description: 'a data cluster in use with refcount 0',
    async build(b) {
      await withData(b);
      await b.setRefcount16('t.qcow2', DATA / 0x10000, 0);
      return 't.qcow2';
    },
  },
  {
    name: 'refcount-too-low',
    description: 'two L2 entries share a data cluster whose refcount is 1',
    iotest: '112 Testing too many references for check (refcount_bits=16)',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', L2 + 8, entry(DATA));
      return 't.qcow2';
    },
  },
  {
    name: 'refcount-overflow-1bit',
    description: 'refcount_bits=1 and a cluster referenced twice',
    iotest: '112 Testing too many references for check',
    async build(b) {
      await withData(b, 'refcount_bits=1', ['write 0 64k']);
      await b.poke('t.qcow2', L2 + 8, entry(DATA));
      return 't.qcow2';
    },
  },
  {
    name: 'copied-missing-l2',
    description: 'a data cluster with refcount 1 lacks QCOW_OFLAG_COPIED',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', L2, entry(DATA, false));
      return 't.qcow2';
    },
  },
  {
    name: 'copied-missing-l1',
    description: 'an L2 table with refcount 1 whose L1 entry lacks QCOW_OFLAG_COPIED',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', L1, entry(L2, false));
      return 't.qcow2';
    },
  },
  {
    name: 'copied-on-shared',
    description: 'COPIED set on a data cluster shared with a snapshot (refcount 2)',
    async build(b) {
      await withData(b);
      await b.qemuImg('snapshot', '-c', 'snap', 't.qcow2');
      const l2 = await b.l2Offset('t.qcow2');
      await b.poke('t.qcow2', l2, entry(DATA));
      await b.poke('t.qcow2', L1, entry(l2));
      return 't.qcow2';
    },
  },
  {
    name: 'refblock-unaligned',
    description: 'the refcount table points at an unaligned refcount block',
    iotest: '060 Discarding with an unaligned refblock',
    async build(b) {
      await withData(b, '', ['write 0 128k']);
      await b.poke('t.qcow2', RT, u64(0x2a00));
      return 't.qcow2';
    },
  },
  {
    name: 'reftable-empty',
    description: 'the only refcount table entry is zeroed',
    iotest: '060 Testing empty refcount table',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', RT, u64(0));
      return 't.qcow2';
    },
  },
  {
    name: 'reftable-empty-with-data',
    description: 'the only refcount table entry is zeroed; L1 and L2 tables in use',
    iotest: '060 Testing empty refcount table with valid L1 and L2 tables',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', RT, u64(0));
      return 't.qcow2';
    },
  },
  {
    name: 'refblock-empty',
    description: 'the refcount block is zeroed',
    iotest: '060 Testing empty refcount block',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', RB, u64(0));
      return 't.qcow2';
    },
  },
  {
    name: 'refblock-beyond-eof-clean',
    description: 'a second refcount block beyond EOF, marked used',
    iotest: '108 Repairing refblock beyond the image end (otherwise clean)',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', RT + 8, u64(0x100000));
      await b.poke('t.qcow2', RB + 32, u16(1));
      return 't.qcow2';
    },
  },
  {
    name: 'refblock-beyond-eof-unallocated',
    description: 'a second refcount block beyond EOF, not marked used',
    iotest: '108 Refblock is unallocated',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', RT + 8, u64(0x100000));
      return 't.qcow2';
    },
  },
  {
    name: 'refblock-signed-overflow',
    description: 'a refcount block at 0x7fffffffffff0000',
    iotest: '108 Signed overflow after the refblock',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', RT + 8, u64(0x7fffffffffff0000n));
      return 't.qcow2';
    },
  },
  {
    name: 'refblock-unsigned-overflow',
    description: 'a refcount block at 0xffffffffffff0000',
    iotest: '108 Unsigned overflow after the refblock',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', RT + 8, u64(0xffffffffffff0000n));
      return 't.qcow2';
    },
  },
  {
    name: 'refblock-too-far',
    description: 'a refcount block at 0xffffff00000000, beyond what the file system can hold',
    iotest: '060 Discarding an out-of-bounds refblock',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', RT + 8, u64(0x00ffffff00000000n));
      return 't.qcow2';
    },
  },
  {
    name: 'refblock-data-cluster-512',
    description: '512-byte clusters: a data cluster referenced by no refblock area',
    iotest: '108 Repairing unreferenced data cluster in new refblock area',
    async build(b) {
      await b.create('t.qcow2', '64M', 'cluster_size=512');
      await b.qemuIo('t.qcow2', ['write 0 0x1b200']);
      await b.poke('t.qcow2', 0x1ccc8, entry(0x20000));
      await b.truncate('t.qcow2', 0x20200);
      await b.qemuIo('t.qcow2', ['write -P 42 128k 512'], 'raw');
      return 't.qcow2';
    },
  },

  // --- Dirty and corrupt bits -----------------------------------------------------------------
  {
    name: 'dirty-killed-writer',
    description: 'lazy refcounts; the writer was killed, leaving the image dirty',
    iotest: '039 Creating a dirty image file',
    async build(b) {
      await b.create('t.qcow2', '128M', 'compat=1.1,lazy_refcounts=on');
      await b.qemuIo('t.qcow2', ['write -P 0x5a 0 512', 'sigraise 9'], 'qcow2', true);
      return 't.qcow2';
    },
  },
  {
    name: 'dirty-bit-clean',
    description: 'the dirty bit set on a consistent image',
    async build(b) {
      await withData(b, 'lazy_refcounts=on');
      await b.poke('t.qcow2', H.incompatibleFeatures, u64(1));
      return 't.qcow2';
    },
  },
  {
    name: 'corrupt-bit-clean',
    description: 'the corrupt bit set on a consistent image',
    async build(b) {
      await withData(b);
      await b.poke('t.qcow2', H.incompatibleFeatures, u64(2));
      return 't.qcow2';
    },
  },
  {
    name: 'corrupt-bit-leaked',
    description: 'the corrupt bit set on an image with a leaked cluster',
    async build(b) {
      await withData(b);
      await b.truncate('t.qcow2', 11 * 0x10000);
      await b.setRefcount16('t.qcow2', 10, 1);
      await b.poke('t.qcow2', H.incompatibleFeatures, u64(2));
      return 't.qcow2';
    },
  },
  {
    name: 'dirty-and-refblock-unaligned',
    description: 'dirty, with an unaligned refcount block',
    iotest: '060 Testing dirty corrupt image',
    async build(b) {
      await b.create('t.qcow2');
      await b.poke('t.qcow2', RT, hexBytes('00000000 ffff2a00'));
      await b.poke('t.qcow2', H.incompatibleFeatures, u64(1));
      return 't.qcow2';
    },
  },

  // --- Snapshots ------------------------------------------------------------------------------
  {
    name: 'snapshot-l1-unaligned',
    description: 'a snapshot whose L1 table offset is not cluster aligned',
    iotest: '080 Invalid snapshot L1 table offset',
    async build(b) {
      await withData(b, '', ['write 0 512']);
      await b.qemuImg('snapshot', '-c', 'test', 't.qcow2');
      const sn = await b.peekU64('t.qcow2', H.snapshotsOffset);
      await b.poke('t.qcow2', sn, u64(0x400200));
      return 't.qcow2';
    },
  },
  {
    name: 'snapshot-l1-too-large',
    description: 'a snapshot whose L1 table has 0x10000000 entries',
    iotest: '080 Invalid snapshot L1 table size',
    async build(b) {
      await withData(b, '', ['write 0 512']);
      await b.qemuImg('snapshot', '-c', 'test', 't.qcow2');
      const sn = await b.peekU64('t.qcow2', H.snapshotsOffset);
      await b.poke('t.qcow2', sn + 8, u32(0x10000000));
      return 't.qcow2';
    },
  },
  {
    name: 'snapshot-incomplete-v3',
    description: 'a v3 image whose snapshot entries lack the 16 bytes of extra data v3 requires',
    iotest: '261 Repair botched v3',
    async build(b) {
      await b.create('t.qcow2', '64M', 'compat=0.10');
      for (const n of ['sn0', 'sn1', 'sn2']) await b.qemuImg('snapshot', '-c', n, 't.qcow2');
      await rewriteSnapshotExtra(b, 't.qcow2', [0, 50, 8]);
      await b.poke('t.qcow2', H.version, u32(3));
      await b.poke('t.qcow2', H.headerLength, u32(0x68));
      await b.poke('t.qcow2', H.refcountOrder, u32(4));
      return 't.qcow2';
    },
  },
  {
    name: 'snapshot-extra-data-huge',
    description: 'a snapshot entry claiming 64 KiB of extra data',
    iotest: '261 Reject too much unknown extra data',
    async build(b) {
      await b.create('t.qcow2');
      for (const n of ['sn0', 'sn1', 'sn2', 'sn3']) await b.qemuImg('snapshot', '-c', n, 't.qcow2');
      const offsets = await snapshotEntryOffsets(b, 't.qcow2');
      await b.poke('t.qcow2', offsets[3]! + 36, u32(0x10000));
      return 't.qcow2';
    },
  },
  {
    name: 'snapshot-table-too-big',
    description: 'a snapshot table one entry over the 64 MiB limit (sparse, 66 MiB file)',
    iotest: '261 Snapshot table too big',
    bigFile: true,
    async build(b) {
      return bigSnapshotTable(b);
    },
  },
  {
    name: 'snapshots-too-many',
    description: 'a v2 image with 131072 (all-zero) snapshot table entries',
    iotest: '261 Too many snapshots',
    async build(b) {
      await b.create('t.qcow2', '64M', 'compat=0.10');
      await b.poke('t.qcow2', H.snapshotsOffset, u64(0x100000));
      await b.poke('t.qcow2', H.nbSnapshots, u32(0x20000));
      await b.truncate('t.qcow2', 0x100000 + 40 * 131072);
      await b.poke('t.qcow2', 0x100000 + 40 * 65536, u64(0xe0000));
      await b.poke('t.qcow2', 0x100000 + 40 * 65536 + 8, u32(1));
      await b.poke('t.qcow2', 0x100000 - 2 * 65536, entry(0xf0000));
      await refblock0Allocate(b, 't.qcow2', 0x100000 - 2 * 65536, 0x100000 + 40 * 131072);
      return 't.qcow2';
    },
  },
  {
    name: 'snapshots-with-data-file',
    description: 'an image with an external data file and a snapshot table entry',
    async build(b) {
      // QEMU opens a data file name as recorded, relative to the working directory: record an
      // absolute name so the image opens from anywhere (and its copies share the data file).
      await b.create('t.qcow2', '64M', `data_file=${b.path('t.data')}`);
      await b.qemuIo('t.qcow2', ['write -P 0x12 0 64k']);
      // Borrow a snapshot table from a twin image without a data file.
      await b.create('twin.qcow2');
      await b.qemuImg('snapshot', '-c', 'snap', 'twin.qcow2');
      const off = await b.peekU64('twin.qcow2', H.snapshotsOffset);
      const table = await b.peek('twin.qcow2', off, 512);
      const end = (await readFile(b.path('t.qcow2'))).length;
      const at = Math.ceil(end / 0x10000) * 0x10000;
      await b.truncate('t.qcow2', at + 0x10000);
      await b.poke('t.qcow2', at, table);
      await b.poke('t.qcow2', H.snapshotsOffset, u64(at));
      await b.poke('t.qcow2', H.nbSnapshots, u32(1));
      await b.setRefcount16('t.qcow2', at / 0x10000, 1);
      return 't.qcow2';
    },
  },
  {
    name: 'compressed-with-data-file',
    description: 'an image with an external data file and a compressed L2 entry',
    async build(b) {
      // QEMU opens a data file name as recorded, relative to the working directory: record an
      // absolute name so the image opens from anywhere (and its copies share the data file).
      await b.create('t.qcow2', '64M', `data_file=${b.path('t.data')}`);
      await b.qemuIo('t.qcow2', ['write -P 0x12 0 128k']);
      const l2 = await b.l2Offset('t.qcow2');
      await b.poke('t.qcow2', l2 + 8, u64((1n << 62n) | 0x10000n));
      return 't.qcow2';
    },
  },

  // --- Bitmaps --------------------------------------------------------------------------------
  {
    name: 'bitmap-granularity-bad',
    description: 'a persistent bitmap with granularity 2^40',
    async build(b) {
      await withData(b);
      await b.qemuImg('bitmap', '--add', 't.qcow2', 'b0');
      const dir = await bitmapDirectoryOffset(b, 't.qcow2');
      await b.poke('t.qcow2', dir + 17, new Uint8Array([40]));
      return 't.qcow2';
    },
  },
  {
    name: 'bitmap-table-entry-bad',
    description: 'a persistent bitmap whose table has a reserved bit set',
    async build(b) {
      await withData(b);
      await b.qemuImg('bitmap', '--add', 't.qcow2', 'b0');
      const dir = await bitmapDirectoryOffset(b, 't.qcow2');
      const table = await b.peekU64('t.qcow2', dir);
      await b.poke('t.qcow2', table, u64(0x2));
      return 't.qcow2';
    },
  },

  {
    name: 'bitmap-duplicate-name',
    description: 'two persistent bitmaps with the same name',
    async build(b) {
      await withData(b);
      await b.qemuImg('bitmap', '--add', 't.qcow2', 'b0');
      await b.qemuImg('bitmap', '--add', 't.qcow2', 'b1');
      const dir = await bitmapDirectoryOffset(b, 't.qcow2');
      // The second entry follows the first (24 bytes + "b0", padded to 8): rename b1 to b0.
      await b.poke('t.qcow2', dir + 32 + 24 + 1, ascii('0'));
      return 't.qcow2';
    },
  },
  {
    name: 'bitmap-table-size-wrong',
    description: 'a persistent bitmap whose table is one cluster longer than the bitmap needs',
    async build(b) {
      await withData(b);
      await b.qemuImg('bitmap', '--add', 't.qcow2', 'b0');
      const dir = await bitmapDirectoryOffset(b, 't.qcow2');
      await b.poke('t.qcow2', dir + 8, u32(2));
      return 't.qcow2';
    },
  },

  // --- Backing files --------------------------------------------------------------------------
  {
    name: 'backing-missing',
    description: 'the backing file does not exist',
    async build(b) {
      await b.qemuImg('create', '-q', '-f', 'qcow2', 'base.qcow2', '64M');
      await b.qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'base.qcow2', 't.qcow2');
      await b.qemuIo('t.qcow2', ['write -P 7 0 4k']);
      await rm(b.path('base.qcow2'));
      return 't.qcow2';
    },
  },
  {
    name: 'backing-loop',
    description: 'two images, each the backing file of the other (qemu-img 7.2 hangs)',
    qemuHangs: true,
    async build(b) {
      await b.qemuImg('create', '-q', '-f', 'qcow2', 'a.qcow2', '64M');
      await b.qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'a.qcow2', 't.qcow2');
      await b.qemuImg('rebase', '-u', '-F', 'qcow2', '-b', 't.qcow2', 'a.qcow2');
      return 't.qcow2';
    },
  },
  {
    name: 'backing-self',
    description: 'an image that is its own backing file (qemu-img 7.2 hangs)',
    qemuHangs: true,
    async build(b) {
      await b.qemuImg('create', '-q', '-f', 'qcow2', 't.qcow2', '64M');
      await b.qemuImg('rebase', '-u', '-F', 'qcow2', '-b', 't.qcow2', 't.qcow2');
      return 't.qcow2';
    },
  },
];

// ---------------------------------------------------------------------------------------------
// Helpers for the snapshot and bitmap cases

async function snapshotEntryOffsets(b: Builder, name: string): Promise<number[]> {
  const n = await b.peekU32(name, H.nbSnapshots);
  let off = await b.peekU64(name, H.snapshotsOffset);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push(off);
    const idLen = (await b.peek(name, off + 12, 2)).reduce((a, v) => a * 256 + v, 0);
    const nameLen = (await b.peek(name, off + 14, 2)).reduce((a, v) => a * 256 + v, 0);
    const extra = await b.peekU32(name, off + 36);
    off += Math.ceil((40 + extra + idLen + nameLen) / 8) * 8;
  }
  return out;
}

/** Rebuild the snapshot table in place with the given extra data sizes (261's v2 template). */
async function rewriteSnapshotExtra(b: Builder, name: string, sizes: number[]): Promise<void> {
  const offsets = await snapshotEntryOffsets(b, name);
  const parts: Uint8Array[] = [];
  for (let i = 0; i < offsets.length; i++) {
    const off = offsets[i]!;
    const pre = await b.peek(name, off, 40);
    const idLen = (pre[12]! << 8) | pre[13]!;
    const nameLen = (pre[14]! << 8) | pre[15]!;
    const oldExtra = new DataView(pre.buffer).getUint32(36);
    const extra = new Uint8Array(sizes[i]!);
    extra.set((await b.peek(name, off + 40, Math.min(oldExtra, extra.length))).subarray(0));
    if (extra.length > 24) extra.set(ascii('very important data'), 24);
    const post = await b.peek(name, off + 40 + oldExtra, idLen + nameLen);
    new DataView(pre.buffer).setUint32(36, extra.length);
    const len = Math.ceil((40 + extra.length + idLen + nameLen) / 8) * 8;
    const e = new Uint8Array(len);
    e.set(pre, 0);
    e.set(extra, 40);
    e.set(post, 40 + extra.length);
    parts.push(e);
  }
  const table = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let p = 0;
  for (const part of parts) {
    table.set(part, p);
    p += part.length;
  }
  await b.poke(name, offsets[0]!, table);
}

/** Mark clusters [start, end) used in refblock 0 (261's refblock0_allocate). */
async function refblock0Allocate(
  b: Builder,
  name: string,
  start: number,
  end: number,
): Promise<void> {
  for (let c = Math.floor(start / 65536); c < Math.ceil(end / 65536); c++) {
    await b.setRefcount16(name, c, 1);
  }
}

/** 261 "Snapshot table too big": entries with 1 KiB extra data and 64 KiB id and name each. */
async function bigSnapshotTable(b: Builder): Promise<string> {
  const name = 't.qcow2';
  await b.create(name);
  const snSize = 40 + 1024 + 65535 + 65535 + 2;
  const sn0 = new Uint8Array(40);
  const v = new DataView(sn0.buffer);
  v.setUint16(12, 0xffff);
  v.setUint16(14, 0xffff);
  v.setUint32(36, 0x400);
  await b.poke(name, H.snapshotsOffset, u64(0x100000));
  let offset = 0x100000;
  let written = 0;
  let count = 0;
  const fh = await open(b.path(name), 'r+');
  try {
    while (written <= 64 * 1048576) {
      await fh.write(sn0, 0, 40, offset);
      offset += snSize;
      written += snSize;
      count++;
    }
  } finally {
    await fh.close();
  }
  await b.truncate(name, offset);
  await b.poke(name, offset - snSize, u64(0xe0000));
  await b.poke(name, offset - snSize + 8, u32(1));
  await b.poke(name, 0x100000 - 2 * 65536, entry(0xf0000));
  await refblock0Allocate(b, name, 0x100000 - 2 * 65536, offset);
  await b.poke(name, H.nbSnapshots, u32(count));
  return name;
}

async function bitmapDirectoryOffset(b: Builder, name: string): Promise<number> {
  const headerLength = await b.peekU32(name, H.headerLength);
  const cluster = await b.peek(name, 0, 65536);
  const view = new DataView(cluster.buffer);
  for (let p = headerLength; ;) {
    const type = view.getUint32(p);
    const len = view.getUint32(p + 4);
    if (type === 0) throw new Error('no bitmaps extension');
    if (type === 0x23852875) return Number(view.getBigUint64(p + 8 + 16));
    p += 8 + Math.ceil(len / 8) * 8;
  }
}

// ---------------------------------------------------------------------------------------------
// Public API

/** Names of every image in the battery, in a stable order. */
export function corruptImageNames(): string[] {
  return SPECS.map((s) => s.name);
}

/** Name and description of every image, without building anything. */
export function describeCorruptImages(): { name: string; description: string; iotest?: string }[] {
  return SPECS.map(({ name, description, iotest }) =>
    iotest === undefined ? { name, description } : { name, description, iotest },
  );
}

/** Build one image of the battery in `dir/<name>/` and describe it. */
export async function makeCorruptImage(name: string, dir: string): Promise<CorruptImage> {
  const spec = SPECS.find((s) => s.name === name);
  if (!spec) throw new Error(`no corrupt image named '${name}'`);
  const sub = join(dir, name);
  await mkdir(sub, { recursive: true });
  const file = await spec.build(new Builder(sub));
  return {
    name,
    description: spec.description,
    iotest: spec.iotest,
    path: join(sub, file),
    qemuHangs: spec.qemuHangs ?? false,
    bigFile: spec.bigFile ?? false,
  };
}

/** Build several (default: all) images of the battery under `dir`. */
export async function makeCorruptImages(
  dir: string,
  names = corruptImageNames(),
): Promise<CorruptImage[]> {
  const out: CorruptImage[] = [];
  for (const n of names) out.push(await makeCorruptImage(n, dir));
  return out;
}
