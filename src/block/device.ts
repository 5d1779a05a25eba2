// BlockDevice: the one contract every image format (raw, qcow2, an NBD client) implements and
// every consumer (qemu-img operations, the NBD server, the launcher) uses.
//
// Offsets and lengths are guest (virtual disk) bytes, safe integers. Every operation is async.
// Optional work that a driver cannot do efficiently still works (writeZeroes falls back to
// writing zeros) unless the caller asks for the fast path only (`noFallback`, NBD FAST_ZERO).

import type { Storage } from './storage.js';

export type ImageFormat = 'raw' | 'qcow2' | 'nbd' | 'luks';

export interface BlockCapabilities {
  readonly readOnly: boolean;
  /** writeZeroes is cheaper than writing a zero buffer (metadata-only or a host punch). */
  readonly fastZero: boolean;
  /** discard may free space; after it the range reads as zero or from the backing file. */
  readonly discard: boolean;
  /** A freshly created device reads as all zeros (QEMU's has_zero_init). */
  readonly zeroInit: boolean;
  /** Several connections/handles see each other's flushed writes (NBD CAN_MULTI_CONN). */
  readonly multiConn: boolean;
  /** Natural granularity for allocation status (cluster size for qcow2, 1 for raw). */
  readonly allocationGranularity: number;
  /** Smallest write alignment that avoids read-modify-write (subcluster or 512 B). */
  readonly requestAlignment: number;
  /** Whether blockStatus can report `allocated: false` (i.e. the format has a notion of it). */
  readonly hasAllocationStatus: boolean;
}

/**
 * A run of guest bytes with one status, as qemu-img map and NBD base:allocation see it
 * (QEMU's BDRV_BLOCK_* flags after walking the backing chain).
 */
export interface BlockExtent {
  readonly offset: number;
  readonly length: number;
  /** Allocated in this image or one of its backing images ("present" in qemu-img map). */
  readonly allocated: boolean;
  /** Reads return data stored somewhere (not known zero). */
  readonly data: boolean;
  /** Reads return zeros. */
  readonly zero: boolean;
  /** Index in the backing chain of the image that answered (0 = this one). */
  readonly depth: number;
  /** Host byte offset in `file`, when the data (or preallocated zeros) lives at a known place. */
  readonly hostOffset?: number;
  /** The storage that holds the data, when `hostOffset` is set. */
  readonly file?: string;
  /** The data is stored compressed (no host offset). */
  readonly compressed?: boolean;
}

export interface ReadOptions {
  signal?: AbortSignal;
}

export interface WriteOptions {
  /** Force Unit Access: durable before the promise resolves. */
  fua?: boolean;
  signal?: AbortSignal;
}

export interface WriteZeroesOptions extends WriteOptions {
  /** The driver may deallocate the range (qcow2 discard-to-zero, host punch). */
  mayUnmap?: boolean;
  /** Fail with NotSupportedError instead of writing zero buffers (NBD_CMD_FLAG_FAST_ZERO). */
  noFallback?: boolean;
}

export interface BlockStatusOptions {
  /** Stop after this many extents (NBD REQ_ONE => 1). Defaults to no limit. */
  maxExtents?: number;
  signal?: AbortSignal;
}

export interface BlockDevice {
  readonly format: ImageFormat;
  /** The name the device was opened with (as printed by qemu-img). */
  readonly filename: string;
  /** Virtual size in bytes. */
  readonly size: number;
  readonly capabilities: BlockCapabilities;
  /** The backing device, if this image has one and it was opened. */
  readonly backing: BlockDevice | undefined;
  /** The storage the format's own bytes live in (the image file). */
  readonly storage: Storage;

  /** Fill `buf` with guest bytes from `offset`. The range must lie within `size`. */
  read(buf: Uint8Array, offset: number, options?: ReadOptions): Promise<void>;

  /** Write `buf` at `offset`. The range must lie within `size`. */
  write(buf: Uint8Array, offset: number, options?: WriteOptions): Promise<void>;

  /** Make a range read as zeros. */
  writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void>;

  /**
   * Hint that a range is no longer needed. Afterwards it reads as zeros, or (qcow2 with a backing
   * file, QEMU semantics) from the backing file. May do nothing.
   */
  discard(offset: number, length: number, options?: WriteOptions): Promise<void>;

  /** Make all completed writes durable, metadata included. */
  flush(): Promise<void>;

  /**
   * Status of guest bytes from `offset`: contiguous extents, the first starting at `offset`,
   * covering at least one byte and at most `length` bytes (callers loop for the rest).
   */
  blockStatus(offset: number, length: number, options?: BlockStatusOptions): Promise<BlockExtent[]>;

  /**
   * Where guest bytes [offset, offset+length) lie as one contiguous range of a host file, when
   * they read exactly as that file's bytes (a raw image, a read-only qcow2's data clusters);
   * undefined otherwise. For zero-copy sends (NBD READ replies with sendfile()); never needed
   * for correctness.
   */
  fileRange?(
    offset: number,
    length: number,
  ): FileRange | undefined | Promise<FileRange | undefined>;

  /**
   * The host file that guest bytes map to one to one (a raw image on a file), for bulk copies
   * that write it directly (convert's native copy loop); undefined when there is none or when
   * writes need more than a write() (writethrough cache). Never needed for correctness.
   */
  directWriteTarget?(): DirectWriteTarget | undefined;

  /**
   * For a bulk writer that makes a format's data writes itself (convert's native copy loop into
   * qcow2): the host file, and how a guest write maps to host writes. undefined when the format
   * or its state does not allow it (see PlannedWriteTarget). Never needed for correctness.
   */
  plannedWriteTarget?(): PlannedWriteTarget | undefined;

  /** Flush, release locks and handles; the backing chain is closed too. Idempotent. */
  close(): Promise<void>;
}

/**
 * A file written directly, behind its device's back (BlockDevice.directWriteTarget). Guest
 * offset N is byte N of `fd`. The writer works in numbered batches (0, 1, ...): it announces
 * each range of a batch before writing there (in order), names the parts it left out once the
 * batch is done, then settles the batch; so the file's reserved-ahead space (ReserveAhead
 * announce/skipped/settle) ends up as plain write()s of the data would have left it.
 */
export interface DirectWriteTarget {
  fd: number;
  /** Guest size: nothing is written at or past it. */
  size: number;
  announce(start: number, end: number, batch: number): void;
  /** [start, end) pairs of a batch left unwritten, sorted and not overlapping. */
  skipped(ranges: ArrayLike<number>): void;
  settle(batch: number): void;
}

/** Receives planned data writes: `parts`, in order, go to the host file from `host` on. */
export type DataSink = (parts: Uint8Array[], host: number) => void;

/**
 * A device whose guest writes a bulk writer plans here and makes itself
 * (BlockDevice.plannedWriteTarget). plan() does all a write does but the data writes, which it
 * hands to `sink` (parts that are views of `buf`'s buffer stand for those bytes, which plan()
 * never reads, so `buf` may be a placeholder); the writer must make them before the device is
 * read, flushed or closed. The host ranges are announced to the file's reserved-ahead space
 * (as DirectWriteTarget) by the writer, in order, as the sink receives them, and each batch is
 * settled once written.
 */
export interface PlannedWriteTarget {
  fd: number;
  /** Guest size. */
  size: number;
  plan(buf: Uint8Array, offset: number, sink: DataSink): Promise<void>;
  announce(start: number, end: number, batch: number): void;
  settle(batch: number): void;
}

/** A byte range of an open host file (BlockDevice.fileRange). */
export interface FileRange {
  fd: number;
  offset: number;
}
