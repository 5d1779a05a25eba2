// qcow2 on-disk constants (docs/interop/qcow2.rst) and QEMU's limits (block/qcow2.h).

export const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
export const DEFAULT_CLUSTER_SIZE = 65536;

/** The v2 header is 72 bytes; v3 is at least 104; QEMU >= 5.1 writes 112 (compression type). */
export const V2_HEADER_LENGTH = 72;
export const V3_MIN_HEADER_LENGTH = 104;
export const V3_HEADER_LENGTH = 112;

// Incompatible feature bits (qcow2.rst "incompatible_features").
export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
export const INCOMPAT_MASK =
  INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

// Compatible feature bits.
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;

// Autoclear feature bits.
export const AUTOCLEAR_BITMAPS = 1n << 0n;
export const AUTOCLEAR_DATA_FILE_RAW = 1n << 1n;
export const AUTOCLEAR_MASK = AUTOCLEAR_BITMAPS | AUTOCLEAR_DATA_FILE_RAW;

export const CRYPT_NONE = 0;
export const CRYPT_AES = 1;
export const CRYPT_LUKS = 2;

export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;

// Header extension types.
export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_CRYPTO_HEADER = 0x0537be77;
export const EXT_BITMAPS = 0x23852875;
export const EXT_DATA_FILE = 0x44415441;

// Table entry flags (qcow2.rst "Cluster mapping").
export const OFLAG_COPIED = 1n << 63n;
export const OFLAG_COMPRESSED = 1n << 62n;
export const OFLAG_ZERO = 1n;
/** Bits 9-55: host cluster offset in L1/L2/reftable entries. */
export const OFFSET_MASK = 0x00ff_ffff_ffff_fe00n;
export const L1E_RESERVED_MASK = 0x7f00_0000_0000_01ffn;
export const L2E_STD_RESERVED_MASK = 0x3f00_0000_0000_01fen;
export const REFT_RESERVED_MASK = 0x1ffn;

export const SUBCLUSTERS_PER_CLUSTER = 32;
export const L2_BITMAP_ALL_ALLOC = 0xffff_ffffn;
export const L2_BITMAP_ALL_ZEROES = 0xffff_ffffn << 32n;

// QEMU limits (block/qcow2.h), enforced on open to bound memory on hostile input.
export const MAX_L1_SIZE_BYTES = 32 * 1024 * 1024;
export const MAX_REFTABLE_SIZE_BYTES = 8 * 1024 * 1024;
export const MAX_SNAPSHOTS = 65536;
export const MAX_SNAPSHOTS_SIZE = 1024 * MAX_SNAPSHOTS;
export const MAX_SNAPSHOT_EXTRA_DATA = 1024;
export const MAX_BITMAPS = 65535;
export const MAX_BITMAP_DIRECTORY_SIZE = 1024 * MAX_BITMAPS;
export const MAX_BACKING_FILE_NAME = 1023;
/** 2^56 - 1: the largest host offset an L2 entry can hold. */
export const MAX_CLUSTER_OFFSET = 2 ** 56 - 1;

export const COMPRESSED_SECTOR_SIZE = 512;

/** The feature name table QEMU 7.2 writes on v3 images with clusters > 4 KiB. */
export const QEMU_FEATURE_TABLE: readonly { type: 0 | 1 | 2; bit: number; name: string }[] = [
  { type: 0, bit: 0, name: 'dirty bit' },
  { type: 0, bit: 1, name: 'corrupt bit' },
  { type: 0, bit: 2, name: 'external data file' },
  { type: 0, bit: 3, name: 'compression type' },
  { type: 0, bit: 4, name: 'extended L2 entries' },
  { type: 1, bit: 0, name: 'lazy refcounts' },
  { type: 2, bit: 0, name: 'bitmaps' },
  { type: 2, bit: 1, name: 'raw external data' },
];
