// Loader for the optional native helper (native/fileops.c): lseek SEEK_DATA/SEEK_HOLE and
// fallocate. Absent (no compiler at install, VMFORGE_NO_NATIVE=1): undefined, and callers fall
// back to portable code.
import { createRequire } from 'node:module';

export interface NativeFileOps {
  extent(fd: number, offset: number, length: number): { hole: boolean; length: number } | undefined;
  punchHole(fd: number, offset: number, length: number): boolean;
  zeroRange(fd: number, offset: number, length: number): boolean;
  allocate(fd: number, offset: number, length: number): boolean;
  /** fallocate(FALLOC_FL_KEEP_SIZE): reserve without changing the size. Absent in older builds. */
  preallocate?(fd: number, offset: number, length: number): boolean;
  /**
   * preadv2(RWF_NOWAIT): bytes read from the page cache (0 at EOF), -1 if the data is not cached
   * (read asynchronously instead), -2 if RWF_NOWAIT is unsupported. Absent in older builds.
   */
  readNoWait?(fd: number, buf: Uint8Array, offset: number): number;
  /** Address of the first byte of `buf` modulo 4096 (-1 if not a Uint8Array). Absent in older builds. */
  pageOffset?(buf: Uint8Array): number;
  /**
   * cachestat(): 1 if every page of the range is in the page cache, 0 if not, -1 if the kernel
   * lacks cachestat (Linux < 6.5). Absent in older builds.
   */
  cached?(fd: number, offset: number, length: number): number;
  /**
   * Non-blocking send of `header` then sendfile() of the file range to a socket. Writes to
   * `out`: [bytes sent (header included; fewer than asked when the socket is full), errno that
   * stopped it (0 for none or a full socket)]. Absent in older builds.
   */
  sendFileRange?(
    sockfd: number,
    header: Uint8Array,
    fd: number,
    offset: number,
    length: number,
    out: Float64Array,
  ): void;
  /** Raise SO_SNDBUF to `bytes` (the kernel caps it); the size in effect, or -1. */
  setSendBuffer?(sockfd: number, bytes: number): number;
  /**
   * native/mapread.c: `length` bytes of the file at `offset`, mmap()ed and populated on the
   * thread pool, with zeroMap[i] set to 1 for each all-zero 512-byte sector (zeroMap at least
   * ceil(length / 512) long, and over 64 bytes so V8 keeps it off its heap). undefined when the
   * range cannot be mapped; the caller then reads it. Never read the view from JavaScript (a
   * file that shrinks would raise SIGBUS): write() it, and unmap() it when done. Absent in
   * older builds.
   */
  mapRead?(
    fd: number,
    offset: number,
    length: number,
    zeroMap: Uint8Array | null,
  ): Promise<Uint8Array | undefined>;
  /** Unmap a mapRead() view now (its buffer is detached); the GC does it otherwise. */
  unmap?(view: Uint8Array): void;
  /** Unmap on the pool what unmap() left for the next mapRead() (call when a copy ends). */
  flushUnmapped?(): void;
  /**
   * native/copychunks.c: copy chunks of source files into the target file in order, on two
   * threads, leaving out zero runs as qemu-img's -S does. `chunks` holds 4 numbers per chunk:
   * target offset, length (multiples of 512, at most 16 MiB), source fd, source offset.
   * Resolves with [chunks done, errno, failed step (1 read, 2 write, 3 no plan), then the
   * byte intervals left out as zeros, 2 numbers each]; copying stops at the first chunk that
   * fails. With a `planner` (a qcow2 target), each chunk's data runs (start and count in
   * sectors, relative to the chunk) go to it once read, and planCopyChunk() gives their host
   * writes; no intervals are reported then. Absent in older builds.
   */
  copyChunks?(
    targetFd: number,
    targetSize: number,
    chunks: Float64Array,
    minSparse: number,
    alignment: number,
    planner?: CopyChunkPlanner,
  ): Promise<Float64Array>;
  /**
   * The answer to a copyChunks() planner call: 4 numbers per host write, in order (host offset,
   * length, source: 0 the chunk's bytes or 1 `extra`'s, offset in that source); null: no plan
   * (the job fails with ECANCELED, step 3). Absent in older builds.
   */
  planCopyChunk?(
    slot: number,
    generation: number,
    writes: Float64Array | null,
    extra: Uint8Array | null,
  ): void;
  /** End the copyChunks() calls writing to targetFd after their current chunk (ECANCELED). */
  cancelCopyChunks?(targetFd: number): void;
  /** End copyChunks()' threads and free its buffers (once the copy's last call has settled). */
  releaseCopyBuffers?(): void;
}

/** copyChunks()' planner: a chunk's data runs (sector start and count pairs) to plan. */
export type CopyChunkPlanner = (
  slot: number,
  generation: number,
  chunk: number,
  runs: Uint32Array,
) => void;

let loaded: NativeFileOps | null | undefined;

export function nativeFileOps(): NativeFileOps | undefined {
  if (loaded === undefined) {
    loaded = null;
    if (process.env['VMFORGE_NO_NATIVE'] !== '1') {
      try {
        const require = createRequire(import.meta.url);
        loaded = require('../../build/Release/vmforge_native.node') as NativeFileOps;
      } catch {
        loaded = null;
      }
    }
  }
  return loaded ?? undefined;
}

export interface NativeZstd {
  /** Compress `src` into `dst`; returns the length, or -1 if it does not fit. */
  compress(src: Uint8Array, dst: Uint8Array, level: number): number;
}

let zstdLoaded: NativeZstd | null | undefined;

/** zstd with a reused context through the symbols of the running Node binary (optional). */
export function nativeZstd(): NativeZstd | undefined {
  if (zstdLoaded === undefined) {
    zstdLoaded = null;
    if (process.env['VMFORGE_NO_NATIVE'] !== '1') {
      try {
        const require = createRequire(import.meta.url);
        zstdLoaded = require('../../build/Release/vmforge_zstd.node') as NativeZstd;
      } catch {
        zstdLoaded = null;
      }
    }
  }
  return zstdLoaded ?? undefined;
}
