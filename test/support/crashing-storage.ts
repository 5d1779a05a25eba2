// A Storage that dies like a killed process: every change after the first `budget` ones fails
// (and nothing of it lands), so the inner MemoryStorage keeps exactly what had reached the disk.
import type { Storage } from '../../src/block/storage.js';
import type { MemoryStorage } from '../../src/block/memory-storage.js';

export class CrashingStorage implements Storage {
  readonly filename = 'crashing';
  readonly readOnly = false;
  crashed = false;
  readonly inner: MemoryStorage;
  #budget: number;

  constructor(inner: MemoryStorage, budget: number) {
    this.inner = inner;
    this.#budget = budget;
  }

  #change(): void {
    if (this.crashed || this.#budget-- <= 0) {
      this.crashed = true;
      throw Object.assign(new Error('killed'), { code: 'EIO' });
    }
  }

  size(): Promise<number> {
    return this.inner.size();
  }
  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.inner.read(buf, offset);
  }
  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.#change();
    await this.inner.write(buf, offset);
  }
  async truncate(size: number): Promise<void> {
    this.#change();
    await this.inner.truncate(size);
  }
  async writeZeroes(offset: number, length: number, mayUnmap: boolean): Promise<void> {
    this.#change();
    void mayUnmap;
    await this.inner.writeZeroes(offset, length);
  }
  async discard(offset: number, length: number): Promise<void> {
    this.#change();
    await this.inner.discard(offset, length);
  }
  async flush(): Promise<void> {}
  allocatedSize(): Promise<number> {
    return this.inner.allocatedSize();
  }
  async close(): Promise<void> {}
}
