// A corpus of images made by the real qemu-img / qemu-io, covering what `info`, `check`, `map`,
// `measure` and `snapshot -l` can print: qcow2 v2/v3, cluster sizes, refcount widths, lazy
// refcounts, extended L2, zlib/zstd compression, 3-deep backing chains over a raw base, internal
// snapshots with awkward names and patched clocks/sizes/icounts, bitmaps (in-use, disabled,
// unicode names), external data files, 1 TiB, the dirty and corrupt bits, leaks and refcount
// corruption, LUKS and AES encryption, raw and luks images.
// Fields qemu-img cannot set (snapshot clocks, in-use bitmaps, header bits, refcounts) are
// patched into the files with the small qcow2 readers below.

import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { decodeByteString } from '../../src/core/byte-string.js';

/** One qemu-img invocation the oracle test replays: argv after `qemu-img`. */
export interface CorpusCommand {
  /** A label, unique in the corpus: "<image>: <what>". */
  label: string;
  args: string[];
  /** Time zone the command runs under (snapshot dates are local time). */
  tz: string;
  kind: 'info' | 'info-chain' | 'check' | 'map' | 'measure' | 'snapshot-list';
  output: 'json' | 'human';
  /**
   * For human output: the JSON command whose result holds the same structured data (its
   * result must be taken from the same run, since check -r changes the image).
   */
  data?: string[];
  /** For map: `info --backing-chain --output=json` of the image, to name the mapped files. */
  chainInfo?: string[];
}

export interface Corpus {
  dir: string;
  commands: CorpusCommand[];
  /**
   * Byte strings (core/byte-string.ts) of names that are not valid UTF-8: qemu-img's JSON only
   * shows \uFFFD for them, so the test maps parsed strings back to these raw names.
   */
  rawNames: string[];
  /** The zoneinfo names used, so the test can format dates in the same zone. */
  timeZones: string[];
}

const SECRET = ['--object', 'secret,id=sec0,data=vmforge'];

function run(cmd: string, args: string[], cwd: string): Buffer {
  return execFileSync(cmd, args, {
    cwd,
    env: { ...process.env, LC_ALL: 'C' },
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60_000,
  });
}

/** Write `bytes` (a byte string) through the shell so argv can carry invalid UTF-8. */
function octal(bytes: string): string {
  const raw = Buffer.from(
    [...bytes].flatMap((ch) => {
      const cp = ch.codePointAt(0)!;
      return cp >= 0xdc80 && cp <= 0xdcff ? [cp - 0xdc00] : [...Buffer.from(ch, 'utf8')];
    }),
  );
  return [...raw].map((b) => `\\${b.toString(8).padStart(3, '0')}`).join('');
}

function snapshotCreate(dir: string, file: string, name: string): void {
  run(
    'sh',
    ['-c', 'exec qemu-img snapshot -c "$(printf "$1")" "$2"', 'sh', octal(name), file],
    dir,
  );
}

// --- tiny qcow2 field access for patches (docs/interop/qcow2.rst) ---

function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, offset);
    return buf;
  } finally {
    closeSync(fd);
  }
}

function writeAt(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt.asUintN(64, v));
  return b;
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}

interface SnapshotPatch {
  dateSec?: number;
  dateNsec?: number;
  vmClockNsec?: bigint;
  vmStateSize?: bigint;
  icount?: bigint;
}

/** Patch fields of the n-th (0-based) snapshot table entry (qcow2.rst "Snapshots"). */
function patchSnapshot(path: string, index: number, p: SnapshotPatch): void {
  const hdr = readAt(path, 0, 72);
  let off = Number(hdr.readBigUInt64BE(64));
  for (let i = 0; i < index; i++) {
    const e = readAt(path, off, 40);
    const len = 40 + e.readUInt32BE(36) + e.readUInt16BE(12) + e.readUInt16BE(14);
    off += (len + 7) & ~7;
  }
  const e = readAt(path, off, 64);
  const extra = e.readUInt32BE(36);
  if (p.dateSec !== undefined) writeAt(path, off + 16, u32(p.dateSec));
  if (p.dateNsec !== undefined) writeAt(path, off + 20, u32(p.dateNsec));
  if (p.vmClockNsec !== undefined) writeAt(path, off + 24, u64(p.vmClockNsec));
  if (p.vmStateSize !== undefined) {
    writeAt(path, off + 32, u32(Number(BigInt.asUintN(32, p.vmStateSize))));
    if (extra >= 8) writeAt(path, off + 40, u64(p.vmStateSize));
  }
  if (p.icount !== undefined) {
    if (extra < 24) throw new Error('snapshot has no icount field');
    writeAt(path, off + 40 + 16, u64(p.icount));
  }
}

/** Set bits in the v3 incompatible_features field (0: dirty, 1: corrupt). */
function setIncompatibleBits(path: string, bits: bigint): void {
  const cur = readAt(path, 72, 8).readBigUInt64BE(0);
  writeAt(path, 72, u64(cur | bits));
}

/** Set the in_use flag of every persistent bitmap (qcow2.rst "Bitmaps extension"). */
function markBitmapsInUse(path: string): void {
  const hdr = readAt(path, 0, 104);
  let off = hdr.readUInt32BE(100); // header_length
  for (;;) {
    const ext = readAt(path, off, 8);
    const type = ext.readUInt32BE(0);
    const len = ext.readUInt32BE(4);
    if (type === 0) throw new Error('no bitmaps extension');
    if (type === 0x23852875) {
      const b = readAt(path, off + 8, 24);
      const n = b.readUInt32BE(0);
      let dir = Number(b.readBigUInt64BE(16));
      for (let i = 0; i < n; i++) {
        const e = readAt(path, dir, 24);
        writeAt(path, dir + 12, u32(e.readUInt32BE(12) | 1));
        const entryLen = 24 + e.readUInt32BE(20) + e.readUInt16BE(18);
        dir += (entryLen + 7) & ~7;
      }
      return;
    }
    off += 8 + ((len + 7) & ~7);
  }
}

/** Set the 16-bit refcount of host cluster `cluster` (first refcount block only). */
function setRefcount16(path: string, cluster: number, value: number): void {
  const hdr = readAt(path, 0, 56);
  const rtOffset = Number(hdr.readBigUInt64BE(48));
  const block = Number(readAt(path, rtOffset, 8).readBigUInt64BE(0));
  writeAt(path, block + cluster * 2, u16(value));
}

/** Drop guest cluster `index`'s L2 entry (L1[0]'s table), leaking its host cluster. */
function clearL2Entry(path: string, index: number): void {
  const hdr = readAt(path, 0, 48);
  const l1 = Number(hdr.readBigUInt64BE(40));
  const l2 = Number(readAt(path, l1, 8).readBigUInt64BE(0) & 0x00fffffffffffe00n);
  writeAt(path, l2 + index * 8, u64(0n));
}

/** Host cluster index of guest cluster 0's data (must be allocated, uncompressed). */
function firstDataCluster(path: string, clusterSize: number): number {
  const hdr = readAt(path, 0, 48);
  const l1 = Number(hdr.readBigUInt64BE(40));
  const l2 = Number(readAt(path, l1, 8).readBigUInt64BE(0) & 0x00fffffffffffe00n);
  const data = Number(readAt(path, l2, 8).readBigUInt64BE(0) & 0x00fffffffffffe00n);
  return data / clusterSize;
}

// --- the corpus ---

/** Names (byte strings) for internal snapshots, incl. ones qemu-img truncates at 255 bytes. */
export const SNAPSHOT_NAMES: readonly string[] = [
  'snap1',
  'with space and "quotes" \\ backslash\ttab',
  'снимок-😀-名前',
  'ctl\u0001\u001f\u007f-del',
  // invalid UTF-8: overlong NUL, 0xFF, a UTF-8-encoded surrogate, a 5-byte form, U+FFFE
  decodeByteString(
    Buffer.from([
      0x61, 0xc0, 0x80, 0x62, 0xff, 0x63, 0xed, 0xa0, 0x80, 0x64, 0xf8, 0x88, 0x80, 0x80, 0x80,
      0x65, 0xef, 0xbf, 0xbe, 0x66,
    ]),
  ),
  `${'x'.repeat(254)}é`, // cut after the first byte of "é"
  'L'.repeat(300),
  `${'é'.repeat(127)}abc`, // cut on a character boundary
];

/** What QEMU keeps of a snapshot name given to `snapshot -c` (pstrcpy into char[256]). */
function storedName(name: string): string {
  const bytes = Buffer.from(
    [...name].flatMap((ch) => {
      const cp = ch.codePointAt(0)!;
      return cp >= 0xdc80 && cp <= 0xdcff ? [cp - 0xdc00] : [...Buffer.from(ch, 'utf8')];
    }),
  );
  return decodeByteString(bytes.subarray(0, 255));
}

function needsRaw(name: string): boolean {
  return /[\udc80-\udcff]/.test(name);
}

export function buildCorpus(dir: string): Corpus {
  const commands: CorpusCommand[] = [];
  const rawNames: string[] = [];
  const timeZones = ['UTC', 'America/New_York', 'Asia/Kolkata'];
  const q = (...args: string[]): Buffer => run('qemu-img', args, dir);
  const io = (file: string, ...cmds: string[]): void => {
    run('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), file], dir);
  };
  const ioFmt = (fmt: string, file: string, ...cmds: string[]): void => {
    run('qemu-io', ['-f', fmt, ...cmds.flatMap((c) => ['-c', c]), file], dir);
  };

  interface Want {
    /** extra arguments before the file name (e.g. --object, -f, --image-opts) */
    pre?: string[];
    chain?: boolean;
    check?: boolean;
    map?: boolean;
    measure?: boolean;
    snapshots?: boolean;
    tz?: string;
  }
  const add = (name: string, file: string, want: Want): void => {
    const pre = want.pre ?? [];
    const tz = want.tz ?? 'UTC';
    const both = (
      kind: CorpusCommand['kind'],
      what: string,
      head: string[],
      extra: Partial<CorpusCommand> = {},
    ): void => {
      const json = [...head, '--output=json', ...pre, file];
      commands.push({
        label: `${name}: ${what} json`,
        args: json,
        tz,
        kind,
        output: 'json',
        ...extra,
      });
      commands.push({
        label: `${name}: ${what} human`,
        args: [...head, '--output=human', ...pre, file],
        tz,
        kind,
        output: 'human',
        data: json,
        ...extra,
      });
    };
    both('info', 'info', ['info']);
    if (want.chain) both('info-chain', 'info --backing-chain', ['info', '--backing-chain']);
    if (want.check !== false) both('check', 'check', ['check']);
    if (want.map !== false) {
      both('map', 'map', ['map'], {
        chainInfo: ['info', '--backing-chain', '--output=json', ...pre, file],
      });
    }
    if (want.measure) {
      for (const target of ['qcow2', 'raw']) {
        both('measure', `measure -O ${target}`, ['measure', '-O', target]);
      }
    }
    if (want.snapshots) {
      for (const zone of timeZones) {
        commands.push({
          label: `${name}: snapshot -l (${zone})`,
          args: ['snapshot', '-l', ...pre, file],
          tz: zone,
          kind: 'snapshot-list',
          output: 'human',
          data: ['info', '--output=json', ...pre, file],
        });
      }
    }
  };

  // Plain v3 with data at unaligned offsets, zero clusters, discards and compressed clusters.
  q('create', '-q', '-f', 'qcow2', 'v3.qcow2', '64M');
  io(
    'v3.qcow2',
    'write -P 0x11 0 64k',
    'write -P 0x22 100000 3000',
    'write -P 0x33 1M 256k',
    'write -z 2M 128k',
    'write -P 0x44 4M 64k',
    'discard 4M 64k',
    'write -P 0x66 63M 1M',
  );
  add('v3', 'v3.qcow2', { measure: true });
  // Compressed clusters: counted by check; human map stops with an error at the first one.
  q('create', '-q', '-f', 'qcow2', 'zlib.qcow2', '16M');
  io('zlib.qcow2', 'write -P 1 0 64k', 'write -c -P 0x55 1M 128k', 'write -P 2 2M 64k');
  add('compressed zlib', 'zlib.qcow2', { measure: true });

  q('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '10M');
  io('v2.qcow2', 'write -P 1 0 1k', 'write -z 1M 64k', 'write -c 2M 64k');
  add('v2', 'v2.qcow2', { measure: true });

  for (const cs of ['512', '2M']) {
    q('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs}`, `cs${cs}.qcow2`, '20M');
    io(`cs${cs}.qcow2`, 'write -P 7 0 3k', 'write -P 8 5M 1M', 'write -z 10M 2M');
    add(`cluster_size=${cs}`, `cs${cs}.qcow2`, { measure: true });
  }

  for (const rb of ['1', '64']) {
    q('create', '-q', '-f', 'qcow2', '-o', `refcount_bits=${rb}`, `rb${rb}.qcow2`, '8M');
    io(`rb${rb}.qcow2`, 'write -P 9 0 128k');
    add(`refcount_bits=${rb}`, `rb${rb}.qcow2`, {});
  }

  q('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', 'lazy.qcow2', '8M');
  io('lazy.qcow2', 'write -P 3 0 64k');
  add('lazy_refcounts', 'lazy.qcow2', {});

  q('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=128k', 'xl2.qcow2', '16M');
  io(
    'xl2.qcow2',
    'write -P 1 0 4k',
    'write -P 2 20k 8k',
    'write -z 128k 64k',
    'write -P 3 1M 128k',
    'discard 1M 4k',
  );
  add('extended_l2', 'xl2.qcow2', { measure: true });

  q('create', '-q', '-f', 'qcow2', '-o', 'compression_type=zstd', 'zstd.qcow2', '8M');
  io('zstd.qcow2', 'write -c -P 5 0 64k', 'write -c -P 6 256k 64k', 'write -P 7 1M 64k');
  add('zstd', 'zstd.qcow2', { measure: true });

  for (const prealloc of ['metadata', 'falloc']) {
    q(
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      `preallocation=${prealloc}`,
      `pre-${prealloc}.qcow2`,
      '4M',
    );
    io(`pre-${prealloc}.qcow2`, 'write -P 1 64k 64k');
    add(`preallocation=${prealloc}`, `pre-${prealloc}.qcow2`, {});
  }

  // 1 TiB, sparse, data near both ends.
  q('create', '-q', '-f', 'qcow2', 'tib.qcow2', '1T');
  io('tib.qcow2', 'write -P 1 0 64k', 'write -P 2 1099511562240 64k', 'write -P 3 549755813888 4k');
  add('1 TiB', 'tib.qcow2', { measure: true });

  // Backing chains: raw base <- qcow2 mid <- qcow2 top, in a sub-directory so that the full
  // backing path differs from the stored name ("actual path: ...").
  run('mkdir', ['-p', 'chain dir'], dir);
  q('create', '-q', '-f', 'raw', 'chain dir/base.raw', '16M');
  ioFmt('raw', 'chain dir/base.raw', 'write -P 0xb1 0 1M', 'write -P 0xb2 8M 64k');
  q('create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'chain dir/mid.qcow2');
  io('chain dir/mid.qcow2', 'write -P 0xa1 512k 1M', 'write -z 8M 64k');
  q('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'chain dir/top.qcow2', '32M');
  io('chain dir/top.qcow2', 'write -P 0xc1 1M 64k', 'write -z 2M 64k', 'write -P 0xc3 20M 64k');
  add('chain top', 'chain dir/top.qcow2', { chain: true, measure: true });
  add('chain mid', 'chain dir/mid.qcow2', { chain: true });
  // An absolute backing path, and a chain addressed from inside its directory.
  q(
    'create',
    '-q',
    '-f',
    'qcow2',
    '-b',
    join(dir, 'chain dir/top.qcow2'),
    '-F',
    'qcow2',
    'abs-top.qcow2',
  );
  add('absolute backing', 'abs-top.qcow2', { chain: true, map: true });

  // Internal snapshots with awkward names and patched clocks, sizes, dates and icounts.
  q('create', '-q', '-f', 'qcow2', 'snaps.qcow2', '8M');
  io('snaps.qcow2', 'write -P 1 0 64k');
  for (const name of SNAPSHOT_NAMES) {
    snapshotCreate(dir, 'snaps.qcow2', name);
    const stored = storedName(name);
    if (needsRaw(stored)) rawNames.push(stored);
  }
  const patches: SnapshotPatch[] = [
    { dateSec: 0, dateNsec: 0, vmClockNsec: 0n, vmStateSize: 0n, icount: 0n },
    { dateSec: 1700000000, dateNsec: 123456789, vmClockNsec: 1_500_000_000n, vmStateSize: 1n },
    { dateSec: 1711846800, vmClockNsec: 360_000_999_000_000n, vmStateSize: 1023n, icount: -1n }, // 100 h
    {
      dateSec: 1730000000,
      vmClockNsec: 0xffffffffffffffffn,
      vmStateSize: 1024n * 1000n,
      icount: 12345678n,
    },
    { dateSec: 4294967295, vmClockNsec: 59_999_000_000n, vmStateSize: 123456789n, icount: -1n },
    { dateSec: 1234567890, vmClockNsec: 3_599_999_999_999n, vmStateSize: 1n << 40n },
    { dateSec: 1e9, vmStateSize: 1048575n },
    { dateSec: 1600000000, vmStateSize: 999n * 1024n * 1024n },
  ];
  patches.forEach((p, i) => patchSnapshot(join(dir, 'snaps.qcow2'), i, p));
  for (const tz of timeZones.slice(1)) {
    commands.push({
      label: `snapshots: info human (${tz})`,
      args: ['info', '--output=human', 'snaps.qcow2'],
      tz,
      kind: 'info',
      output: 'human',
      data: ['info', '--output=json', 'snaps.qcow2'],
    });
  }
  add('snapshots', 'snaps.qcow2', { snapshots: true });
  // A snapshot in a v2 image.
  snapshotCreate(dir, 'v2.qcow2', 'v2snap');
  add('v2 with snapshot', 'v2.qcow2', { snapshots: true, map: false, check: false });

  // Bitmaps: enabled (auto), disabled (no flags), big granularity, unicode name, in-use.
  q('create', '-q', '-f', 'qcow2', 'bitmaps.qcow2', '16M');
  io('bitmaps.qcow2', 'write -P 1 0 64k');
  q('bitmap', '--add', 'bitmaps.qcow2', 'bm0');
  q('bitmap', '--add', '-g', '1M', 'bitmaps.qcow2', 'big');
  q('bitmap', '--add', '--disable', 'bitmaps.qcow2', 'disabled');
  q('bitmap', '--add', '-g', '512', 'bitmaps.qcow2', 'ünïcødé "bm"');
  add('bitmaps', 'bitmaps.qcow2', { measure: true });
  run('cp', ['bitmaps.qcow2', 'bitmaps-inuse.qcow2'], dir);
  markBitmapsInUse(join(dir, 'bitmaps-inuse.qcow2'));
  add('bitmaps in use', 'bitmaps-inuse.qcow2', {});

  // External data files.
  q('create', '-q', '-f', 'qcow2', '-o', 'data_file=ext.data', 'ext.qcow2', '8M');
  io('ext.qcow2', 'write -P 1 0 64k', 'write -P 2 1M 4k');
  add('data_file', 'ext.qcow2', { measure: true });
  q(
    'create',
    '-q',
    '-f',
    'qcow2',
    '-o',
    'data_file=extraw.data,data_file_raw=on',
    'extraw.qcow2',
    '8M',
  );
  io('extraw.qcow2', 'write -P 1 0 64k');
  add('data_file_raw', 'extraw.qcow2', {});

  // Dirty bit (lazy refcounts) and corrupt bit.
  q('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', 'dirty.qcow2', '8M');
  io('dirty.qcow2', 'write -P 1 0 64k');
  setIncompatibleBits(join(dir, 'dirty.qcow2'), 1n);
  add('dirty bit', 'dirty.qcow2', {});
  q('create', '-q', '-f', 'qcow2', 'corrupt.qcow2', '8M');
  io('corrupt.qcow2', 'write -P 1 0 64k');
  setIncompatibleBits(join(dir, 'corrupt.qcow2'), 2n);
  add('corrupt bit', 'corrupt.qcow2', {});

  // Leaks and refcount corruption, checked and repaired (each repair on a fresh copy).
  q('create', '-q', '-f', 'qcow2', 'leak.qcow2', '8M');
  io('leak.qcow2', 'write -P 1 0 64k', 'write -c -P 2 1M 64k', 'write -P 3 2M 128k');
  clearL2Entry(join(dir, 'leak.qcow2'), 32); // guest 2M: one leaked cluster
  clearL2Entry(join(dir, 'leak.qcow2'), 33);
  add('leaks', 'leak.qcow2', { map: false });
  q('create', '-q', '-f', 'qcow2', 'refbad.qcow2', '8M');
  io('refbad.qcow2', 'write -P 1 0 64k', 'write -P 2 1M 64k');
  setRefcount16(join(dir, 'refbad.qcow2'), firstDataCluster(join(dir, 'refbad.qcow2'), 65536), 0);
  clearL2Entry(join(dir, 'refbad.qcow2'), 16); // and a leak
  add('refcount corruption', 'refbad.qcow2', { map: false });
  for (const [src, mode] of [
    ['leak', 'leaks'],
    ['refbad', 'all'],
    ['refbad', 'leaks'],
  ] as const) {
    const json = ['check', '-r', mode, '--output=json', `${src}-r${mode}-json.qcow2`];
    const human = ['check', '-r', mode, '--output=human', `${src}-r${mode}-human.qcow2`];
    run('cp', [`${src}.qcow2`, json.at(-1)!], dir);
    run('cp', [`${src}.qcow2`, human.at(-1)!], dir);
    commands.push({
      label: `${src}: check -r ${mode} json`,
      args: json,
      tz: 'UTC',
      kind: 'check',
      output: 'json',
    });
    commands.push({
      label: `${src}: check -r ${mode} human`,
      args: human,
      tz: 'UTC',
      kind: 'check',
      output: 'human',
      data: json,
    });
  }

  // Encryption: LUKS (info without the secret; check/map with it) and legacy AES.
  // QEMU benchmarks PBKDF2 on create and fails now and then with "Unable to get accurate CPU
  // usage" when a round took under one tick of thread CPU time (14 of 20 runs here with sha256);
  // sha512 rounds are slow enough to measure (0 of 20), and we still try again then.
  const createLuks = (...args: string[]): void => {
    for (let attempt = 1; ; attempt++) {
      try {
        q(...args);
        return;
      } catch (err) {
        const stderr = String((err as { stderr?: Buffer }).stderr ?? '');
        if (attempt >= 5 || !stderr.includes('Unable to get accurate CPU usage')) throw err;
      }
    }
  };
  createLuks(
    'create',
    '-q',
    '-f',
    'qcow2',
    ...SECRET,
    '-o',
    'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,encrypt.hash-alg=sha512',
    'luks.qcow2',
    '8M',
  );
  add('luks qcow2', 'luks.qcow2', { map: false, check: false });
  const luksOpts = 'driver=qcow2,file.filename=luks.qcow2,encrypt.key-secret=sec0';
  run('qemu-io', [...SECRET, '--image-opts', '-c', 'write -P 1 0 64k', luksOpts], dir);
  add('luks qcow2 with secret', luksOpts, { pre: [...SECRET, '--image-opts'], measure: true });
  q(
    'create',
    '-q',
    '-f',
    'qcow2',
    ...SECRET,
    '-o',
    'encrypt.format=aes,encrypt.key-secret=sec0',
    'aes.qcow2',
    '8M',
  );
  add('aes qcow2', 'aes.qcow2', { check: false, map: false });
  const aesOpts = 'driver=qcow2,file.filename=aes.qcow2,encrypt.key-secret=sec0';
  run('qemu-io', [...SECRET, '--image-opts', '-c', 'write -P 1 0 64k', aesOpts], dir);
  add('aes qcow2 with secret', aesOpts, { pre: [...SECRET, '--image-opts'] });
  createLuks(
    'create',
    '-q',
    '-f',
    'luks',
    ...SECRET,
    '-o',
    'key-secret=sec0,iter-time=10,hash-alg=sha512',
    'disk.luks',
    '8M',
  );
  add('luks', 'disk.luks', { check: false, map: false });

  // Raw images (check: "does not support checks", exit 63), sparse and empty.
  q('create', '-q', '-f', 'raw', 'disk.raw', '8M');
  ioFmt('raw', 'disk.raw', 'write -P 1 0 64k', 'write -P 2 4M 1k');
  add('raw', 'disk.raw', { measure: true });
  q('create', '-q', '-f', 'raw', 'empty.raw', '0');
  add('empty raw', 'empty.raw', {});
  q('create', '-q', '-f', 'qcow2', 'empty.qcow2', '0');
  add('empty qcow2', 'empty.qcow2', {});

  // Odd file name (spaces, unicode, quote).
  q('create', '-q', '-f', 'qcow2', 'naïve "name".qcow2', '3M');
  io('naïve "name".qcow2', 'write -P 1 64k 64k');
  add('odd filename', 'naïve "name".qcow2', {});

  // map --start-offset / --max-length, including past the end.
  for (const extra of [
    ['--start-offset=1M', '--max-length=3M'],
    ['--start-offset=100000'],
    ['--start-offset=1G'],
    ['--max-length=0'],
  ]) {
    const json = ['map', '--output=json', ...extra, 'v3.qcow2'];
    const chainInfo = ['info', '--backing-chain', '--output=json', 'v3.qcow2'];
    commands.push({
      label: `v3: map ${extra.join(' ')} json`,
      args: json,
      tz: 'UTC',
      kind: 'map',
      output: 'json',
      chainInfo,
    });
    commands.push({
      label: `v3: map ${extra.join(' ')} human`,
      args: ['map', '--output=human', ...extra, 'v3.qcow2'],
      tz: 'UTC',
      kind: 'map',
      output: 'human',
      data: json,
      chainInfo,
    });
  }

  // measure --size.
  for (const [target, opts, size] of [
    ['qcow2', [], '1G'],
    ['qcow2', ['-o', 'cluster_size=2M,extended_l2=on'], '1T'],
    ['qcow2', ['-o', 'preallocation=full'], '100M'],
    ['raw', [], '1G'],
  ] as const) {
    const label = `measure --size ${size} -O ${target} ${opts.join(' ')}`;
    const json = ['measure', '--output=json', '-O', target, ...opts, '--size', size];
    commands.push({
      label: `${label} json`,
      args: json,
      tz: 'UTC',
      kind: 'measure',
      output: 'json',
    });
    commands.push({
      label: `${label} human`,
      args: ['measure', '--output=human', '-O', target, ...opts, '--size', size],
      tz: 'UTC',
      kind: 'measure',
      output: 'human',
      data: json,
    });
  }

  return { dir, commands, rawNames, timeZones };
}

/** Run a corpus command: raw stdout/stderr bytes and the exit status. */
export function runCorpusCommand(
  corpus: Corpus,
  cmd: CorpusCommand,
): { code: number; stdout: Buffer; stderr: Buffer } {
  try {
    const stdout = execFileSync('qemu-img', cmd.args, {
      cwd: corpus.dir,
      env: { ...process.env, LC_ALL: 'C', TZ: cmd.tz },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr: Buffer.alloc(0) };
  } catch (err) {
    const e = err as { status?: number | null; stdout?: Buffer; stderr?: Buffer };
    if (typeof e.status !== 'number') throw err;
    return {
      code: e.status,
      stdout: e.stdout ?? Buffer.alloc(0),
      stderr: e.stderr ?? Buffer.alloc(0),
    };
  }
}
