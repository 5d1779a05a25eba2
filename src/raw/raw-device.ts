// The raw format: guest offset N is byte N of the storage. Allocation status comes from the
// host file's holes (SEEK_DATA/SEEK_HOLE) as QEMU's file-posix reports it.

import type {
  BlockCapabilities,
  BlockDevice,
  BlockExtent,
  DirectWriteTarget,
  FileRange,
  WriteOptions,
  WriteZeroesOptions,
} from '../block/device.js';
import type { Storage } from '../block/storage.js';
import { assertRange } from '../block/range.js';
import { NotSupportedError } from '../core/index.js';

export interface RawDeviceOptions {
  /** Guest size; defaults to the storage's size at open. */
  size?: number;
  filename?: string;
}

export class RawDevice implements BlockDevice {
  readonly format = 'raw' as const;
  readonly filename: string;
  readonly storage: Storage;
  readonly backing = undefined;
  readonly capabilities: BlockCapabilities;
  #size: number;
  #closed = false;

  private constructor(storage: Storage, size: number, filename: string) {
    this.storage = storage;
    this.#size = size;
    this.filename = filename;
    const fast = typeof storage.extent === 'function';
    this.capabilities = {
      readOnly: storage.readOnly,
      fastZero: fast,
      discard: fast,
      zeroInit: true,
      multiConn: true,
      allocationGranularity: 1,
      requestAlignment: 1,
      hasAllocationStatus: false,
    };
  }

  static async open(storage: Storage, options: RawDeviceOptions = {}): Promise<RawDevice> {
    const size = options.size ?? (await storage.size());
    return new RawDevice(storage, size, options.filename ?? storage.filename);
  }

  get size(): number {
    return this.#size;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    assertRange('read', offset, buf.length, this.#size);
    await this.storage.read(buf, offset);
  }

  async write(buf: Uint8Array, offset: number, options: WriteOptions = {}): Promise<void> {
    assertRange('write', offset, buf.length, this.#size);
    await this.storage.write(buf, offset);
    if (options.fua) await this.storage.flush();
  }

  async writeZeroes(
    offset: number,
    length: number,
    options: WriteZeroesOptions = {},
  ): Promise<void> {
    assertRange('write zeroes', offset, length, this.#size);
    if (options.noFallback && !this.capabilities.fastZero) {
      throw new NotSupportedError('raw: fast zeroing is not supported on this storage');
    }
    await this.storage.writeZeroes(offset, length, options.mayUnmap ?? false);
    if (options.fua) await this.storage.flush();
  }

  async discard(offset: number, length: number): Promise<void> {
    assertRange('discard', offset, length, this.#size);
    await this.storage.discard(offset, length);
  }

  async flush(): Promise<void> {
    await this.storage.flush();
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    assertRange('block status', offset, length, this.#size);
    if (length === 0) return [];
    const ext = this.storage.extent ? await this.storage.extent(offset, length) : undefined;
    // No information: "pretend there are no holes" (file-posix raw_co_block_status).
    const hole = ext?.hole ?? false;
    const run = ext ? Math.min(ext.length, length) : length;
    return [
      {
        offset,
        length: run,
        allocated: true,
        data: !hole,
        zero: hole,
        depth: 0,
        hostOffset: offset,
        file: this.storage.filename,
      },
    ];
  }

  fileRange(offset: number, length: number): FileRange | undefined {
    if (this.#closed || offset < 0 || length <= 0 || offset + length > this.#size) return undefined;
    // FileStorage exposes its descriptor; other storages (memory, NBD) have no file to send.
    const fd = (this.storage as { fd?: unknown }).fd;
    return typeof fd === 'number' ? { fd, offset } : undefined;
  }

  directWriteTarget(): DirectWriteTarget | undefined {
    if (this.#closed) return undefined;
    // FileStorage lends its descriptor; other storages (memory, NBD) have no file to write.
    const writer = this.storage.directWriter?.();
    return writer ? { ...writer, size: this.#size } : undefined;
  }

  /** Change the guest size (qemu-img resize on raw): truncates or extends the storage. */
  async resize(size: number): Promise<void> {
    await this.storage.truncate(size);
    this.#size = size;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.storage.close();
  }
}
