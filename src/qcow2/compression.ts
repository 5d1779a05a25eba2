// Compressed clusters (qcow2.rst "Compressed Clusters Descriptor", compression_type), decoded
// and encoded with node:zlib exactly as QEMU's block/qcow2-threads.c does:
//   deflate: raw deflate, 4 KiB window (windowBits -12), memLevel 9, default level. The stored
//            length is only sector-precise, so trailing bytes are normal; QEMU accepts
//            Z_STREAM_END or Z_BUF_ERROR as long as exactly one cluster came out.
//   zstd:    one or more frames with no length prefix; decode frame by frame until a full
//            cluster is produced; the last frame must end exactly at the cluster's end.
// Output is always bounded by the cluster size, so a "zip bomb" cannot exhaust memory.

import type * as Zlib from 'node:zlib';

// node:zlib is loaded on first use: most opens never meet a compressed cluster, and loading it
// costs every CLI start a few ms (process.getBuiltinModule is synchronous, Node >= 22.3).
let zlibModule: typeof Zlib | undefined;
function zlib(): typeof Zlib {
  return (zlibModule ??= process.getBuiltinModule('node:zlib'));
}
import { CorruptImageError } from '../core/index.js';
import { COMPRESSION_ZLIB, COMPRESSION_ZSTD } from './constants.js';
import { nativeZstd } from '../block/native.js';

function decompressError(what: string, cause?: unknown): CorruptImageError {
  return new CorruptImageError(`Could not decompress ${what} cluster: corrupt compressed data`, {
    code: 'VMF_QCOW2_DECOMPRESS',
    cause,
  });
}

async function inflateCluster(src: Uint8Array, clusterSize: number): Promise<Uint8Array> {
  let out: Buffer;
  try {
    out = zlib().inflateRawSync(src, {
      windowBits: 12,
      finishFlush: zlib().constants.Z_SYNC_FLUSH,
      maxOutputLength: clusterSize,
    });
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
      // More than one cluster of output: QEMU keeps the first cluster (Z_BUF_ERROR, output full).
      return inflateFirstCluster(src, clusterSize);
    }
    throw decompressError('zlib', err);
  }
  if (out.length < clusterSize) throw decompressError('zlib');
  return out;
}

/** Stream-inflate and stop as soon as one cluster came out; memory stays bounded. */
function inflateFirstCluster(src: Uint8Array, clusterSize: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const out = new Uint8Array(clusterSize);
    let filled = 0;
    const inflater = zlib().createInflateRaw({ windowBits: 12 });
    const finish = (err?: unknown) => {
      inflater.removeAllListeners('data');
      inflater.destroy();
      if (filled >= clusterSize) resolve(out);
      else reject(decompressError('zlib', err));
    };
    inflater.on('data', (chunk: Buffer) => {
      const n = Math.min(chunk.length, clusterSize - filled);
      out.set(chunk.subarray(0, n), filled);
      filled += n;
      if (filled >= clusterSize) finish();
    });
    inflater.on('error', finish);
    inflater.on('end', () => finish());
    inflater.end(src);
  });
}

const ZSTD_MAGIC = 0xfd2fb528;

/** Length of the zstd frame at `pos` (RFC 8878 §3.1), or -1 if it is not a well-formed frame. */
function zstdFrameLength(src: Uint8Array, pos: number): number {
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  if (pos + 4 > src.length) return -1;
  const magic = view.getUint32(pos, true);
  if ((magic & 0xfffffff0) === 0x184d2a50) {
    // Skippable frame.
    if (pos + 8 > src.length) return -1;
    return 8 + view.getUint32(pos + 4, true);
  }
  if (magic !== ZSTD_MAGIC) return -1;
  let p = pos + 4;
  if (p >= src.length) return -1;
  const fhd = src[p++]!;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictFlag = fhd & 3;
  if (!singleSegment) p += 1;
  p += [0, 1, 2, 4][dictFlag]!;
  p += [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!;
  for (;;) {
    if (p + 3 > src.length) return -1;
    const bh = src[p]! | (src[p + 1]! << 8) | (src[p + 2]! << 16);
    p += 3;
    const last = bh & 1;
    const type = (bh >> 1) & 3;
    const size = bh >> 3;
    if (type === 3) return -1;
    p += type === 1 ? 1 : size;
    if (last) break;
  }
  if (checksum) p += 4;
  return p > src.length ? -1 : p - pos;
}

function zstdCluster(src: Uint8Array, clusterSize: number): Uint8Array {
  const out = new Uint8Array(clusterSize);
  let filled = 0;
  let pos = 0;
  while (filled < clusterSize) {
    const len = zstdFrameLength(src, pos);
    if (len <= 0) throw decompressError('zstd');
    const frame = src.subarray(pos, pos + len);
    pos += len;
    if (
      (new DataView(frame.buffer, frame.byteOffset).getUint32(0, true) & 0xfffffff0) ===
      0x184d2a50
    )
      continue;
    let chunk: Buffer;
    try {
      chunk = zlib().zstdDecompressSync(frame, { maxOutputLength: clusterSize - filled });
    } catch (err) {
      // A frame producing more than the rest of the cluster is corrupt (QEMU: zstd_ret > 0).
      throw decompressError('zstd', err);
    }
    out.set(chunk, filled);
    filled += chunk.length;
    if (chunk.length === 0 && pos >= src.length) throw decompressError('zstd');
  }
  return out;
}

/** Decompress one cluster's worth of data from `src` (which may have trailing bytes). */
export async function decompressCluster(
  type: number,
  src: Uint8Array,
  clusterSize: number,
): Promise<Uint8Array> {
  if (type === COMPRESSION_ZLIB) return inflateCluster(src, clusterSize);
  if (type === COMPRESSION_ZSTD) return zstdCluster(src, clusterSize);
  throw new CorruptImageError(`qcow2: unknown compression type: ${type}`);
}

/** QEMU's settings (qcow2-threads.c): zstd level 3; raw deflate, 4 KiB window, memLevel 9. */
const zstdLevel = () => ({ params: { [zlib().constants.ZSTD_c_compressionLevel]: 3 } });
const deflateOptions = () => ({
  level: zlib().constants.Z_DEFAULT_COMPRESSION,
  windowBits: 12,
  memLevel: 9,
});

/** zstd through the native helper (a reused context): undefined if it is not available. */
function nativeZstdCluster(data: Uint8Array): Uint8Array | null | undefined {
  const z = nativeZstd();
  if (!z) return undefined;
  // QEMU compresses into cluster_size - 1 bytes: anything larger is stored uncompressed.
  const dst = new Uint8Array(data.length - 1);
  const n = z.compress(data, dst, 3);
  return n < 0 ? null : dst.subarray(0, n);
}

/**
 * Compress one cluster (qcow2_co_compress). Returns undefined when the result is not smaller
 * than the cluster (QEMU then writes the cluster uncompressed).
 */
export function compressCluster(type: number, data: Uint8Array): Uint8Array | undefined {
  let out: Uint8Array;
  if (type === COMPRESSION_ZLIB) {
    out = zlib().deflateRawSync(data, deflateOptions());
  } else if (type === COMPRESSION_ZSTD) {
    const fast = nativeZstdCluster(data);
    if (fast !== undefined) return fast ?? undefined;
    out = zlib().zstdCompressSync(data, { ...zstdLevel(), pledgedSrcSize: data.length });
  } else {
    throw new CorruptImageError(`qcow2: unknown compression type: ${type}`);
  }
  return out.length < data.length ? out : undefined;
}

/**
 * The same off the main thread where that pays: deflate runs on the libuv pool (both cores
 * compress, as QEMU's compression threads do); zstd with the native helper is fast enough to
 * run inline (~0.04 ms per 64 KiB cluster).
 */
export function compressClusterAsync(
  type: number,
  data: Uint8Array,
): Promise<Uint8Array | undefined> {
  if (type === COMPRESSION_ZSTD) {
    const fast = nativeZstdCluster(data);
    if (fast !== undefined) return Promise.resolve(fast ?? undefined);
  }
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, out: Buffer) => {
      if (err) reject(err);
      else resolve(out.length < data.length ? out : undefined);
    };
    if (type === COMPRESSION_ZLIB) zlib().deflateRaw(data, deflateOptions(), done);
    else if (type === COMPRESSION_ZSTD)
      zlib().zstdCompress(data, { ...zstdLevel(), pledgedSrcSize: data.length }, done);
    else reject(new CorruptImageError(`qcow2: unknown compression type: ${type}`));
  });
}
