// FileStorage: a host file (or block device) through fs/promises, positional I/O only.

import { open, type FileHandle } from 'node:fs/promises';
import { constants as fsConstants, fstatSync, writeSync } from 'node:fs';
import { fromSystemError, InvalidArgumentError } from '../core/index.js';
import type { DirectWriteTarget } from './device.js';
import type { Storage } from './storage.js';
import { nativeFileOps } from './native.js';
import { ReserveAhead, type ReserveAheadOptions } from './reserve-ahead.js';

/** Default largest read served synchronously from the page cache (see read()). */
const NOWAIT_MAX = 2 * 1024 * 1024;
/** Set once preadv2(RWF_NOWAIT) turned out to be unavailable. */
let noWaitUnsupported = false;

/** Zero buffer reused for writeZeroes fallbacks; never written to. */
const ZERO_CHUNK = new Uint8Array(1 << 20);

export interface FileStorageOptions {
  readOnly?: boolean;
  /** Create the file (fail if it exists unless `truncate`). */
  create?: boolean;
  /** With `create`: replace an existing file. */
  truncate?: boolean;
  /**
   * QEMU cache mode semantics without O_DIRECT: 'writeback' (default) syncs on flush(),
   * 'unsafe' never syncs (qemu-img convert's default target mode), 'writethrough' syncs after
   * every write.
   */
  cache?: 'writeback' | 'unsafe' | 'writethrough';
  /**
   * Writes of at most this many bytes are made synchronously, without the thread-pool round
   * trip (~0.1-0.2 ms, several times the cost of a small page-cache write). For batch tools
   * whose writes are serialized anyway (qemu-img convert's in-order writes of compressed
   * clusters and metadata), not for servers: a write the kernel throttles blocks the event
   * loop. @default 0
   */
  syncWriteMax?: number;
  /**
   * Reads of at most this many bytes are first served synchronously from the page cache
   * (preadv2 RWF_NOWAIT, never waiting for the disk). Good for latency (NBD); a bulk copy is
   * faster with its 2 MiB reads on the thread pool, in parallel with its writes.
   * @default 2 MiB
   */
  syncReadMax?: number;
  /**
   * Reserve disk space ahead of the writes, a span at a time, and give back what was not
   * written (see ReserveAhead). For a sequential writer of a file it created: convert's target.
   * Regular files only; ignored without the native helper.
   */
  reserveAhead?: ReserveAheadOptions;
}

export class FileStorage implements Storage {
  readonly filename: string;
  readonly readOnly: boolean;
  #fh: FileHandle | undefined;
  #closed = false;
  /** Written (or resized, zeroed, punched) since the last sync: close() syncs only then. */
  #dirty = false;
  readonly #cache: 'writeback' | 'unsafe' | 'writethrough';
  readonly #syncWriteMax: number;
  readonly #syncReadMax: number;
  readonly #ahead: ReserveAhead | undefined;

  private constructor(
    filename: string,
    fh: FileHandle,
    readOnly: boolean,
    options: FileStorageOptions,
    ahead: ReserveAhead | undefined,
  ) {
    this.filename = filename;
    this.#fh = fh;
    this.readOnly = readOnly;
    this.#cache = options.cache ?? 'writeback';
    this.#syncWriteMax = options.syncWriteMax ?? 0;
    this.#syncReadMax = options.syncReadMax ?? NOWAIT_MAX;
    this.#ahead = ahead;
  }

  static async open(path: string, options: FileStorageOptions = {}): Promise<FileStorage> {
    const readOnly = options.readOnly ?? false;
    let flags: number;
    if (options.create) {
      flags =
        fsConstants.O_RDWR |
        fsConstants.O_CREAT |
        (options.truncate ? fsConstants.O_TRUNC : fsConstants.O_EXCL);
    } else {
      flags = readOnly ? fsConstants.O_RDONLY : fsConstants.O_RDWR;
    }
    let fh: FileHandle;
    try {
      fh = await open(path, flags, 0o644);
    } catch (err) {
      // file-posix says "Could not create" for a new image (raw_co_create).
      throw fromSystemError(err, `Could not ${options.create ? 'create' : 'open'} '${path}'`);
    }
    let ahead: ReserveAhead | undefined;
    try {
      const st = await fh.stat();
      if (st.isDirectory()) {
        throw new InvalidArgumentError(`Could not open '${path}': Is a directory`);
      }
      const native = nativeFileOps();
      const { reserveAhead } = options;
      if (reserveAhead && st.isFile() && !readOnly && native?.preallocate) {
        const fd = fh.fd;
        ahead = new ReserveAhead(
          fd,
          { preallocate: native.preallocate, punchHole: native.punchHole },
          {
            span: reserveAhead.span,
            maxSpan: reserveAhead.maxSpan,
            unallocatedFrom: reserveAhead.unallocatedFrom ?? st.size,
            fill: reserveAhead.fill,
          },
          () => fstatSync(fd).size,
        );
      }
      // Without reserving, what `fill` asks for is written now, as QEMU's create would have.
      if (!ahead && reserveAhead?.fill && !readOnly) await writeZeroRanges(fh, reserveAhead.fill);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
    return new FileStorage(path, fh, readOnly && !options.create, options, ahead);
  }

  get fd(): number {
    return this.#handle().fd;
  }

  #handle(): FileHandle {
    if (!this.#fh) throw new Error(`FileStorage '${this.filename}' is closed`);
    return this.#fh;
  }

  #checkWritable(): void {
    if (this.readOnly)
      throw fromSystemError({ code: 'EROFS' }, `Cannot write to '${this.filename}'`);
  }

  async size(): Promise<number> {
    const st = await this.#handle().stat();
    if (st.isBlockDevice()) {
      // stat() reports 0 for block devices; find the end by seeking through a read probe.
      return blockDeviceSize(this.#handle());
    }
    return st.size;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    const fh = this.#handle();
    // Offsets past 2^53 (hostile metadata) lie beyond any file: they read as zeros, as past EOF.
    if (offset + buf.length > Number.MAX_SAFE_INTEGER) {
      const inRange = Math.max(0, Number.MAX_SAFE_INTEGER - offset);
      buf.fill(0, inRange);
      if (inRange === 0) return;
      buf = buf.subarray(0, inRange);
    }
    let done = 0;
    // Fast path: bytes already in the page cache are copied right here, without the thread-pool
    // round trip of an asynchronous read (it dominated NBD read latency and CPU). It never waits
    // for the disk (RWF_NOWAIT); large reads stay asynchronous so the event loop is not held.
    const native = nativeFileOps();
    if (
      native?.readNoWait &&
      !noWaitUnsupported &&
      buf.length > 0 &&
      buf.length <= this.#syncReadMax
    ) {
      const n = native.readNoWait(fh.fd, buf, offset);
      if (n === buf.length) return;
      if (n > 0) done = n;
      else if (n === -2) noWaitUnsupported = true;
    }
    while (done < buf.length) {
      let n: number;
      try {
        ({ bytesRead: n } = await fh.read(buf, done, buf.length - done, offset + done));
      } catch (err) {
        throw fromSystemError(err, `Could not read '${this.filename}' at offset ${offset + done}`);
      }
      if (n === 0) {
        buf.fill(0, done); // past EOF reads as zeros
        return;
      }
      done += n;
    }
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.#checkWritable();
    const fh = this.#handle();
    const sync = buf.length <= this.#syncWriteMax;
    this.#ahead?.writing(offset, buf.length);
    this.#dirty = true;
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        if (sync) n = writeSync(fh.fd, buf, done, buf.length - done, offset + done);
        else ({ bytesWritten: n } = await fh.write(buf, done, buf.length - done, offset + done));
      } catch (err) {
        throw fromSystemError(
          err,
          `Could not write to '${this.filename}' at offset ${offset + done}`,
        );
      }
      done += n;
    }
    if (this.#cache === 'writethrough') await this.#sync();
  }

  /**
   * The descriptor and reserve-ahead hooks for a writer that bypasses write() (see
   * DirectWriteTarget); undefined when writes need more than a write() (read-only, writethrough).
   */
  directWriter(): Omit<DirectWriteTarget, 'size'> | undefined {
    if (this.readOnly || this.#cache === 'writethrough' || !this.#fh) return undefined;
    const ahead = this.#ahead;
    return {
      fd: this.#fh.fd,
      announce: (start, end, batch) => {
        this.#dirty = true;
        ahead?.announce(start, end, batch);
      },
      skipped: (ranges) => ahead?.skipped(ranges),
      settle: (batch) => ahead?.settle(batch),
    };
  }

  async truncate(size: number): Promise<void> {
    this.#checkWritable();
    this.#dirty = true;
    try {
      await this.#handle().truncate(size);
    } catch (err) {
      throw fromSystemError(err, `Could not resize '${this.filename}'`);
    }
  }

  async writeZeroes(offset: number, length: number, mayUnmap: boolean): Promise<void> {
    this.#checkWritable();
    if (length === 0) return;
    this.#dirty = true;
    const native = nativeFileOps();
    if (native) {
      // fallocate(PUNCH_HOLE) deallocates; ZERO_RANGE keeps the allocation (QEMU file-posix).
      const ok = mayUnmap
        ? native.punchHole(this.fd, offset, length)
        : native.zeroRange(this.fd, offset, length);
      if (ok) return;
    }
    const size = await this.size();
    if (offset >= size) {
      // Beyond EOF everything already reads as zero; just make sure the length covers it.
      await this.truncate(Math.max(size, offset + length));
      return;
    }
    if (mayUnmap && offset + length >= size) {
      // A zeroed tail can be dropped and re-extended sparse, without writing anything.
      await this.truncate(offset);
      await this.truncate(Math.max(size, offset + length));
      return;
    }
    for (let pos = offset; pos < offset + length;) {
      const n = Math.min(ZERO_CHUNK.length, offset + length - pos);
      await this.write(ZERO_CHUNK.subarray(0, n), pos);
      pos += n;
    }
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#checkWritable();
    const native = nativeFileOps();
    if (native && length > 0) {
      this.#dirty = true;
      native.punchHole(this.fd, offset, length);
    }
  }

  async flush(): Promise<void> {
    if (this.readOnly || this.#cache === 'unsafe') return;
    await this.#sync();
  }

  async #sync(): Promise<void> {
    // Cleared first: a write made while the sync runs may not be covered by it.
    this.#dirty = false;
    try {
      await this.#handle().datasync();
    } catch (err) {
      this.#dirty = true;
      throw fromSystemError(err, `Could not flush '${this.filename}'`);
    }
  }

  async allocatedSize(): Promise<number> {
    const st = await this.#handle().stat();
    return st.blocks * 512;
  }

  async extent(
    offset: number,
    length: number,
  ): Promise<{ hole: boolean; length: number } | undefined> {
    const native = nativeFileOps();
    if (!native) return undefined;
    return native.extent(this.fd, offset, length);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const fh = this.#fh;
    this.#fh = undefined;
    try {
      const finish = this.#ahead?.finish();
      if (finish && fh) {
        if (finish.zeroFill.length > 0 || finish.truncateTo !== undefined) this.#dirty = true;
        await writeZeroRanges(fh, finish.zeroFill);
        // A truncate to the size it has frees blocks reserved past EOF (ext4, xfs, tmpfs); one
        // call, so the size is never wrong, even for an instant.
        if (finish.truncateTo !== undefined) await fh.truncate(finish.truncateTo);
      }
      // bdrv_close() flushes what was written since the last flush (cache=writeback and
      // writethrough: convert -t writeback, dd, resize); last, after the space reserved ahead
      // is given back, which writes the raw first block and changes the file's metadata. A
      // failure is not reported: bdrv_close() ignores the flush's result too, and an error here
      // would replace the one a failing command closes its files after.
      if (fh && !this.readOnly && this.#cache !== 'unsafe' && this.#dirty) {
        await fh.datasync().catch(() => undefined);
      }
    } finally {
      await fh?.close();
    }
  }
}

async function writeZeroRanges(fh: FileHandle, ranges: [number, number][]): Promise<void> {
  for (const [start, end] of ranges)
    await fh.write(new Uint8Array(end - start), 0, end - start, start);
}

async function blockDeviceSize(fh: FileHandle): Promise<number> {
  // Binary search for the first offset where a 1-byte read returns nothing.
  const one = new Uint8Array(1);
  let lo = 0;
  let hi = 1;
  while ((await fh.read(one, 0, 1, hi - 1)).bytesRead === 1) {
    lo = hi;
    hi *= 2;
    if (hi > Number.MAX_SAFE_INTEGER / 2) break;
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if ((await fh.read(one, 0, 1, mid - 1)).bytesRead === 1) lo = mid;
    else hi = mid;
  }
  return lo;
}
