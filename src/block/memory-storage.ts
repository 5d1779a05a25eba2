// MemoryStorage: a sparse in-memory Storage in 64 KiB pages. The test double for drivers and the
// NBD server, and a scratch target.

import type { Storage } from './storage.js';

const PAGE = 64 * 1024;

export class MemoryStorage implements Storage {
  readonly filename: string;
  readonly readOnly: boolean;
  #pages = new Map<number, Uint8Array>();
  #size: number;

  constructor(size = 0, filename = 'memory', readOnly = false) {
    this.#size = size;
    this.filename = filename;
    this.readOnly = readOnly;
  }

  async size(): Promise<number> {
    return this.#size;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const pageNo = Math.floor(pos / PAGE);
      const inPage = pos - pageNo * PAGE;
      const n = Math.min(PAGE - inPage, buf.length - done);
      const page = pos < this.#size ? this.#pages.get(pageNo) : undefined;
      if (page) buf.set(page.subarray(inPage, inPage + n), done);
      else buf.fill(0, done, done + n);
      done += n;
    }
    // Bytes beyond size read as zero even if a page still holds old data.
    if (offset + buf.length > this.#size) buf.fill(0, Math.max(0, this.#size - offset));
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw Object.assign(new Error('read-only'), { code: 'EROFS' });
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const pageNo = Math.floor(pos / PAGE);
      const inPage = pos - pageNo * PAGE;
      const n = Math.min(PAGE - inPage, buf.length - done);
      let page = this.#pages.get(pageNo);
      if (!page) {
        page = new Uint8Array(PAGE);
        this.#pages.set(pageNo, page);
      }
      page.set(buf.subarray(done, done + n), inPage);
      done += n;
    }
    this.#size = Math.max(this.#size, offset + buf.length);
  }

  async truncate(size: number): Promise<void> {
    if (size < this.#size) {
      for (const pageNo of [...this.#pages.keys()]) {
        if (pageNo * PAGE >= size) this.#pages.delete(pageNo);
        else if ((pageNo + 1) * PAGE > size) this.#pages.get(pageNo)!.fill(0, size - pageNo * PAGE);
      }
    }
    this.#size = size;
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    await this.discard(offset, length);
    this.#size = Math.max(this.#size, offset + length);
  }

  async discard(offset: number, length: number): Promise<void> {
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const pageNo = Math.floor(pos / PAGE);
      const inPage = pos - pageNo * PAGE;
      const n = Math.min(PAGE - inPage, end - pos);
      const page = this.#pages.get(pageNo);
      if (page) {
        if (n === PAGE) this.#pages.delete(pageNo);
        else page.fill(0, inPage, inPage + n);
      }
      pos += n;
    }
  }

  async flush(): Promise<void> {}

  async allocatedSize(): Promise<number> {
    return this.#pages.size * PAGE;
  }

  async extent(offset: number, length: number): Promise<{ hole: boolean; length: number }> {
    const first = this.#pages.has(Math.floor(offset / PAGE));
    let pos = offset;
    while (pos < offset + length && this.#pages.has(Math.floor(pos / PAGE)) === first) {
      pos = (Math.floor(pos / PAGE) + 1) * PAGE;
    }
    return { hole: !first, length: Math.min(pos, offset + length) - offset };
  }

  async close(): Promise<void> {}
}
