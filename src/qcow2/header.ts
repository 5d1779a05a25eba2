// The qcow2 header and its extensions: decode / validate / encode (qcow2.rst "Header",
// "Header extensions"). Validation follows the order and wording of QEMU 7.2's qcow2_do_open()
// and qcow2_read_extensions(), so users see the messages they know.

import {
  ByteReader,
  ByteWriter,
  CorruptImageError,
  decodeByteString,
  encodeByteString,
  NotSupportedError,
} from '../core/index.js';
import {
  AUTOCLEAR_BITMAPS,
  AUTOCLEAR_DATA_FILE_RAW,
  COMPRESSION_ZLIB,
  COMPRESSION_ZSTD,
  CRYPT_LUKS,
  EXT_BACKING_FORMAT,
  EXT_BITMAPS,
  EXT_CRYPTO_HEADER,
  EXT_DATA_FILE,
  EXT_END,
  EXT_FEATURE_TABLE,
  INCOMPAT_COMPRESSION,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
  INCOMPAT_MASK,
  MAX_BACKING_FILE_NAME,
  MAX_BITMAP_DIRECTORY_SIZE,
  MAX_BITMAPS,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
  QCOW2_MAGIC,
  QEMU_FEATURE_TABLE,
  V2_HEADER_LENGTH,
  V3_HEADER_LENGTH,
  V3_MIN_HEADER_LENGTH,
} from './constants.js';

export interface FeatureNameEntry {
  type: number; // 0 incompatible, 1 compatible, 2 autoclear
  bit: number;
  name: string;
}

export interface BitmapsExtension {
  nbBitmaps: number;
  directorySize: number;
  directoryOffset: number;
}

export interface UnknownExtension {
  type: number;
  data: Uint8Array;
}

export interface Qcow2Header {
  version: 2 | 3;
  clusterBits: number;
  /** Virtual size in bytes. */
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  /** As found on disk (72 for v2). Rewrites use 112 + unknown fields. */
  headerLength: number;
  compressionType: number;
  /** Header bytes beyond the fields vmforge knows (preserved on rewrite, qcow2.rst). */
  unknownHeaderFields: Uint8Array;

  // Extensions and the backing file name.
  backingFile: string | undefined;
  backingFormat: string | undefined;
  dataFile: string | undefined;
  featureTable: FeatureNameEntry[];
  cryptoHeader: { offset: number; length: number } | undefined;
  /** Valid only while autoclear bit 0 is set; otherwise dropped (qcow2_read_extensions). */
  bitmaps: BitmapsExtension | undefined;
  /** True if a bitmaps extension was present but invalidated by a cleared autoclear bit. */
  staleBitmapsExtension: boolean;
  /** Unknown extensions in on-disk order (preserved on rewrite). */
  unknownExtensions: UnknownExtension[];
}

/**
 * Decode a C string field that is not NUL-terminated on disk (stop at NUL if present). Bytes
 * that are not valid UTF-8 survive as escapes (core/byte-string), so names print as QEMU prints them.
 */
function cString(bytes: Uint8Array): string {
  const nul = bytes.indexOf(0);
  return decodeByteString(nul >= 0 ? bytes.subarray(0, nul) : bytes);
}

export function clusterSizeOf(h: Pick<Qcow2Header, 'clusterBits'>): number {
  return 2 ** h.clusterBits;
}

/**
 * Decode and validate the header from the first cluster of the file (`cluster0` holds at least
 * min(cluster size, 2 MiB) bytes; bytes past EOF must be zero). Field checks that need the file
 * size or other tables happen in the opener.
 */
export function decodeHeader(cluster0: Uint8Array): Qcow2Header {
  const r = new ByteReader(cluster0, 'qcow2 header');
  const magic = r.u32('magic');
  if (magic !== QCOW2_MAGIC) throw new CorruptImageError('Image is not in qcow2 format');
  const version = r.u32('version');
  if (version < 2 || version > 3) {
    throw new NotSupportedError(`Unsupported qcow2 version ${version}`, {
      code: 'VMF_QCOW2_VERSION',
    });
  }
  const backingFileOffset = r.u64big('backing_file_offset');
  const backingFileSize = r.u32('backing_file_size');
  const clusterBits = r.u32('cluster_bits');
  const sizeBig = r.u64big('size');
  const cryptMethod = r.u32('crypt_method');
  const l1Size = r.u32('l1_size');
  const l1TableOffsetBig = r.u64big('l1_table_offset');
  const refcountTableOffsetBig = r.u64big('refcount_table_offset');
  const refcountTableClusters = r.u32('refcount_table_clusters');
  const nbSnapshots = r.u32('nb_snapshots');
  const snapshotsOffsetBig = r.u64big('snapshots_offset');

  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new CorruptImageError(`Unsupported cluster size: 2^${clusterBits}`);
  }
  const clusterSize = 2 ** clusterBits;

  let incompatibleFeatures = 0n;
  let compatibleFeatures = 0n;
  let autoclearFeatures = 0n;
  let refcountOrder = 4;
  let headerLength = V2_HEADER_LENGTH;
  if (version === 3) {
    incompatibleFeatures = r.u64big('incompatible_features');
    compatibleFeatures = r.u64big('compatible_features');
    autoclearFeatures = r.u64big('autoclear_features');
    refcountOrder = r.u32('refcount_order');
    headerLength = r.u32('header_length');
    if (headerLength < V3_MIN_HEADER_LENGTH) throw new CorruptImageError('qcow2 header too short');
  }
  if (headerLength > clusterSize) throw new CorruptImageError('qcow2 header exceeds cluster size');

  const compressionType =
    headerLength > V3_MIN_HEADER_LENGTH ? cluster0[V3_MIN_HEADER_LENGTH]! : COMPRESSION_ZLIB;
  const unknownHeaderFields =
    headerLength > V3_HEADER_LENGTH
      ? cluster0.slice(V3_HEADER_LENGTH, headerLength)
      : new Uint8Array(0);

  if (backingFileOffset > BigInt(clusterSize)) {
    throw new CorruptImageError('Invalid backing file offset');
  }
  const extEnd = backingFileOffset !== 0n ? Number(backingFileOffset) : clusterSize;

  validateCompressionType(compressionType, incompatibleFeatures);

  // Extensions are read before refusing unknown incompatible bits, for the feature names.
  const ext = readExtensions(
    cluster0,
    headerLength,
    extEnd,
    cryptMethod,
    autoclearFeatures,
    clusterSize,
  );

  const unknownIncompat = incompatibleFeatures & ~INCOMPAT_MASK;
  if (unknownIncompat !== 0n) {
    throw new NotSupportedError(unsupportedFeatureMessage(ext.featureTable, unknownIncompat), {
      code: 'VMF_QCOW2_FEATURE',
    });
  }

  if (refcountOrder > 6) {
    throw new CorruptImageError('Reference count entry width too large; may not exceed 64 bits');
  }
  if ((incompatibleFeatures & INCOMPAT_EXTL2) !== 0n && clusterSize / 32 < 512) {
    throw new CorruptImageError(`Unsupported subcluster size: ${clusterSize / 32}`);
  }

  let backingFile: string | undefined;
  if (backingFileOffset !== 0n) {
    const off = Number(backingFileOffset);
    if (
      backingFileSize > Math.min(MAX_BACKING_FILE_NAME, clusterSize - off) ||
      backingFileSize >= 1024
    ) {
      throw new CorruptImageError('Backing file name too long');
    }
    backingFile = cString(cluster0.subarray(off, off + backingFileSize));
  }

  const safe = (v: bigint, what: string): number => {
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CorruptImageError(`${what} offset invalid`);
    return Number(v);
  };

  if (sizeBig > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CorruptImageError(`Image size 0x${sizeBig.toString(16)} is too large (over 8 PiB)`);
  }

  return {
    version: version as 2 | 3,
    clusterBits,
    size: Number(sizeBig),
    cryptMethod,
    l1Size,
    l1TableOffset: safe(l1TableOffsetBig, 'Active L1 table'),
    refcountTableOffset: safe(refcountTableOffsetBig, 'Reference count table'),
    refcountTableClusters,
    nbSnapshots,
    // Not refused here: QEMU validates it only when it reads the snapshot table at open, which a
    // check-mode open skips (the check reports a bad pointer itself). Beyond 2^53 the value is
    // inexact, and the opener's table validation refuses it with QEMU's message.
    snapshotsOffset: Number(snapshotsOffsetBig),
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    compressionType,
    unknownHeaderFields,
    backingFile,
    ...ext,
  };
}

function validateCompressionType(type: number, incompat: bigint): void {
  if (type !== COMPRESSION_ZLIB && type !== COMPRESSION_ZSTD) {
    throw new NotSupportedError(`qcow2: unknown compression type: ${type}`);
  }
  const bit = (incompat & INCOMPAT_COMPRESSION) !== 0n;
  if (type === COMPRESSION_ZLIB && bit) {
    throw new CorruptImageError('qcow2: Compression type incompatible feature bit must not be set');
  }
  if (type !== COMPRESSION_ZLIB && !bit) {
    throw new CorruptImageError('qcow2: Compression type incompatible feature bit must be set');
  }
}

type DecodedExtensions = Pick<
  Qcow2Header,
  | 'backingFormat'
  | 'dataFile'
  | 'featureTable'
  | 'cryptoHeader'
  | 'bitmaps'
  | 'staleBitmapsExtension'
  | 'unknownExtensions'
>;

function readExtensions(
  cluster0: Uint8Array,
  start: number,
  end: number,
  cryptMethod: number,
  autoclear: bigint,
  clusterSize: number,
): DecodedExtensions {
  const out: DecodedExtensions = {
    backingFormat: undefined,
    dataFile: undefined,
    featureTable: [],
    cryptoHeader: undefined,
    bitmaps: undefined,
    staleBitmapsExtension: false,
    unknownExtensions: [],
  };
  const view = new DataView(cluster0.buffer, cluster0.byteOffset, cluster0.byteLength);
  let offset = start;
  while (offset < end) {
    if (offset + 8 > cluster0.length) break; // beyond what we read: zeros, i.e. the end marker
    const type = view.getUint32(offset);
    const len = view.getUint32(offset + 4);
    offset += 8;
    if (offset > end || len > end - offset)
      throw new CorruptImageError('Header extension too large');
    const data = cluster0.subarray(offset, offset + len);
    switch (type) {
      case EXT_END:
        return out;
      case EXT_BACKING_FORMAT:
        if (len >= 16) {
          throw new CorruptImageError(`ERROR: ext_backing_format: len=${len} too large (>=16)`);
        }
        out.backingFormat = cString(data);
        break;
      case EXT_FEATURE_TABLE:
        out.featureTable = decodeFeatureTable(data);
        break;
      case EXT_CRYPTO_HEADER: {
        if (cryptMethod !== CRYPT_LUKS) {
          throw new CorruptImageError(
            'CRYPTO header extension only expected with LUKS encryption method',
          );
        }
        if (len !== 16) {
          throw new CorruptImageError(`CRYPTO header extension size ${len}, but expected size 16`);
        }
        const r = new ByteReader(data, 'crypto header extension');
        const cOffset = r.u64('offset');
        const cLength = r.u64('length');
        if (cOffset % clusterSize !== 0) {
          throw new CorruptImageError(
            `Encryption header offset '${cOffset}' is not a multiple of cluster size '${clusterSize}'`,
          );
        }
        out.cryptoHeader = { offset: cOffset, length: cLength };
        break;
      }
      case EXT_BITMAPS: {
        if (len !== 24) throw new CorruptImageError('bitmaps_ext: Invalid extension length');
        if ((autoclear & AUTOCLEAR_BITMAPS) === 0n) {
          // "a program lacking bitmap support modified this file": bitmaps are inconsistent
          // and the extension is dropped on the next header update.
          out.staleBitmapsExtension = true;
          break;
        }
        const r = new ByteReader(data, 'bitmaps extension');
        const nbBitmaps = r.u32('nb_bitmaps');
        const reserved = r.u32('reserved32');
        const directorySize = r.u64('bitmap_directory_size');
        const directoryOffset = r.u64('bitmap_directory_offset');
        if (reserved !== 0) throw new CorruptImageError('bitmaps_ext: Reserved field is not zero');
        if (nbBitmaps > MAX_BITMAPS) {
          throw new CorruptImageError(
            `bitmaps_ext: Image has ${nbBitmaps} bitmaps, exceeding the QEMU supported maximum of ${MAX_BITMAPS}`,
          );
        }
        if (nbBitmaps === 0)
          throw new CorruptImageError('found bitmaps extension with zero bitmaps');
        if (directoryOffset % clusterSize !== 0) {
          throw new CorruptImageError('bitmaps_ext: invalid bitmap directory offset');
        }
        if (directorySize > MAX_BITMAP_DIRECTORY_SIZE) {
          throw new CorruptImageError(
            `bitmaps_ext: bitmap directory size (${directorySize}) exceeds the maximum supported size (${MAX_BITMAP_DIRECTORY_SIZE})`,
          );
        }
        out.bitmaps = { nbBitmaps, directorySize, directoryOffset };
        break;
      }
      case EXT_DATA_FILE:
        out.dataFile = cString(data);
        break;
      default:
        out.unknownExtensions.push({ type, data: data.slice() });
    }
    offset += (len + 7) & ~7;
  }
  return out;
}

function decodeFeatureTable(data: Uint8Array): FeatureNameEntry[] {
  // QEMU copies the extension into a zero-filled buffer and walks it in 48-byte entries, so a
  // trailing partial entry (036 writes a 14-byte table) counts, padded with zeros.
  const entries: FeatureNameEntry[] = [];
  for (let off = 0; off < data.length; off += 48) {
    const e = new Uint8Array(48);
    e.set(data.subarray(off, off + 48));
    entries.push({ type: e[0]!, bit: e[1]!, name: cString(e.subarray(2)) });
  }
  return entries;
}

/** "Unsupported qcow2 feature(s): <names>, Unknown incompatible feature: <hex>" (QEMU wording). */
export function unsupportedFeatureMessage(table: FeatureNameEntry[], mask: bigint): string {
  const names: string[] = [];
  let rest = mask;
  for (const e of table) {
    if (e.name === '') break;
    if (e.type === 0 && e.bit < 64 && (rest & (1n << BigInt(e.bit))) !== 0n) {
      names.push(e.name.slice(0, 46));
      rest &= ~(1n << BigInt(e.bit));
    }
  }
  if (rest !== 0n) names.push(`Unknown incompatible feature: ${rest.toString(16)}`);
  return `Unsupported qcow2 feature(s): ${names.join(', ')}`;
}

function extension(w: ByteWriter, type: number, data: Uint8Array): void {
  w.u32(type).u32(data.length).bytes(data).align(8);
}

/**
 * Encode cluster 0 exactly as QEMU's qcow2_update_header() writes it: header, unknown header
 * fields, extensions (backing format, data file, crypto, feature table, bitmaps, unknown ones
 * in QEMU's order), end marker, backing file name. Throws if it does not fit in one cluster.
 */
export function encodeHeader(h: Qcow2Header): Uint8Array {
  const clusterSize = clusterSizeOf(h);
  const buf = new Uint8Array(clusterSize);
  const w = new ByteWriter(buf);
  const enc = { encode: encodeByteString };
  const headerLength = V3_HEADER_LENGTH + h.unknownHeaderFields.length;
  try {
    w.u32(QCOW2_MAGIC).u32(h.version);
    w.u64(0).u32(0); // backing file offset/size, patched below
    w.u32(h.clusterBits).u64(h.size).u32(h.cryptMethod).u32(h.l1Size).u64(h.l1TableOffset);
    w.u64(h.refcountTableOffset).u32(h.refcountTableClusters).u32(h.nbSnapshots);
    w.u64(h.snapshotsOffset);
    if (h.version === 3) {
      w.u64(h.incompatibleFeatures).u64(h.compatibleFeatures).u64(h.autoclearFeatures);
      w.u32(h.refcountOrder).u32(headerLength).u8(h.compressionType).zeros(7);
      w.bytes(h.unknownHeaderFields);
    }
    if (h.backingFormat !== undefined)
      extension(w, EXT_BACKING_FORMAT, enc.encode(h.backingFormat));
    if ((h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n && h.dataFile !== undefined) {
      extension(w, EXT_DATA_FILE, enc.encode(h.dataFile));
    }
    if (h.cryptoHeader && h.cryptoHeader.offset !== 0) {
      const c = ByteWriter.alloc(16).u64(h.cryptoHeader.offset).u64(h.cryptoHeader.length);
      extension(w, EXT_CRYPTO_HEADER, c.buf);
    }
    if (h.version >= 3 && clusterSize > 4096) {
      const t = ByteWriter.alloc(48 * QEMU_FEATURE_TABLE.length);
      for (const f of QEMU_FEATURE_TABLE) {
        const name = enc.encode(f.name);
        t.u8(f.type)
          .u8(f.bit)
          .bytes(name)
          .zeros(46 - name.length);
      }
      extension(w, EXT_FEATURE_TABLE, t.buf);
    }
    if (h.bitmaps && h.bitmaps.nbBitmaps > 0) {
      const b = ByteWriter.alloc(24)
        .u32(h.bitmaps.nbBitmaps)
        .u32(0)
        .u64(h.bitmaps.directorySize)
        .u64(h.bitmaps.directoryOffset);
      extension(w, EXT_BITMAPS, b.buf);
    }
    // QEMU keeps unknown extensions on a list it prepends to while reading, so it writes them
    // back in reverse order; do the same so rewrites match qemu-img byte for byte.
    for (const u of [...h.unknownExtensions].reverse()) extension(w, u.type, u.data);
    w.u32(EXT_END).u32(0);
    if (h.backingFile !== undefined) {
      const name = enc.encode(h.backingFile);
      const off = w.pos;
      w.bytes(name);
      const view = new DataView(buf.buffer);
      view.setBigUint64(8, BigInt(off));
      view.setUint32(16, name.length);
    }
  } catch (err) {
    if (err instanceof RangeError) {
      throw new NotSupportedError(
        'qcow2 header does not fit in the first cluster (No space left on device)',
        {
          code: 'VMF_QCOW2_HEADER_FULL',
          cause: err,
        },
      );
    }
    throw err;
  }
  return buf;
}

export const hasFeature = {
  dirty: (h: Qcow2Header) => (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
  corrupt: (h: Qcow2Header) => (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n,
  dataFile: (h: Qcow2Header) => (h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n,
  extendedL2: (h: Qcow2Header) => (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n,
  dataFileRaw: (h: Qcow2Header) => (h.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n,
};
