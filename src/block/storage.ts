// Storage: a byte-addressable object under a format driver (imago's Storage layer).
// A qcow2 image reads its metadata and data clusters through a Storage; a raw device maps guest
// offsets 1:1 onto one. Implementations: FileStorage (a host file), MemoryStorage (tests).

import type { DirectWriteTarget } from './device.js';

export interface Storage {
  /** Path or description, used in messages and in `map` output. */
  readonly filename: string;
  readonly readOnly: boolean;

  /** Current length in bytes. */
  size(): Promise<number>;

  /**
   * Read into `buf` from `offset`. Bytes beyond the end of the storage read as zero
   * (QEMU images may end mid-cluster; compressed clusters may run past EOF).
   */
  read(buf: Uint8Array, offset: number): Promise<void>;

  /** Write all of `buf` at `offset`, growing the storage if needed. */
  write(buf: Uint8Array, offset: number): Promise<void>;

  /** Set the length (grow sparse or shrink). */
  truncate(size: number): Promise<void>;

  /**
   * Make `[offset, offset+length)` read as zeros, deallocating when `mayUnmap` and possible.
   * Implementations without a faster way write zero buffers.
   */
  writeZeroes(offset: number, length: number, mayUnmap: boolean): Promise<void>;

  /** Deallocate a range if possible (contents then read as zero), else do nothing. */
  discard(offset: number, length: number): Promise<void>;

  /** Make completed writes durable (fdatasync). */
  flush(): Promise<void>;

  /** Bytes the host actually allocated (st_blocks * 512), for `actual-size` / `disk size`. */
  allocatedSize(): Promise<number>;

  /**
   * Where data lies, like lseek(SEEK_DATA/SEEK_HOLE): from `offset`, whether the range starts
   * in data or a hole and how long that run is. Returns undefined when unknown (the caller then
   * treats the range as data).
   */
  extent?(offset: number, length: number): Promise<{ hole: boolean; length: number } | undefined>;

  /** A host file's descriptor for writers that bypass write() (DirectWriteTarget), if any. */
  directWriter?(): Omit<DirectWriteTarget, 'size'> | undefined;

  close(): Promise<void>;
}
