// BufferPool: recycle the large buffers the transmission phase needs for every READ reply and
// WRITE payload. Allocating a fresh 256 KiB..32 MiB Buffer per request costs page faults and GC
// work that dominated throughput; reusing them (after the socket has taken the bytes, or after
// the device has written them) more than doubles READ throughput. Buffers are kept per exact
// size, up to a total byte budget. They are page-aligned (src/block/io-buffer.ts): the kernel's
// copies from the page cache into a READ reply and from it into the socket are both faster.

import { allocIoBuffer } from '../block/io-buffer.js';

export class BufferPool {
  readonly #free = new Map<number, Uint8Array[]>();
  /** Buffers take() made: only these are pooled (views into socket chunks are not ours). */
  readonly #ours = new WeakSet<Uint8Array>();
  readonly #maxBytes: number;
  #pooled = 0;

  constructor(maxBytes = 64 * 1024 * 1024) {
    this.#maxBytes = maxBytes;
  }

  /** A buffer of exactly `size` bytes with undefined contents. */
  take(size: number): Uint8Array {
    const list = this.#free.get(size);
    const buf = list?.pop();
    if (buf) {
      this.#pooled -= size;
      return buf;
    }
    const fresh = allocIoBuffer(size);
    this.#ours.add(fresh);
    return fresh;
  }

  /** Hand a buffer back once nothing refers to its bytes any more. */
  give(buf: Uint8Array): void {
    if (!this.#ours.has(buf)) return;
    if (this.#pooled + buf.length > this.#maxBytes) return;
    let list = this.#free.get(buf.length);
    if (!list) {
      list = [];
      this.#free.set(buf.length, list);
    }
    list.push(buf);
    this.#pooled += buf.length;
  }

  get pooledBytes(): number {
    return this.#pooled;
  }
}

/**
 * ByteBudget: READ/WRITE bytes in flight across all connections of a server, so many clients
 * each sending large writes cannot make the server buffer unbounded amounts of data. One request
 * always fits when nothing else is in flight (a 32 MiB write must be able to run).
 */
export class ByteBudget {
  readonly #max: number;
  #used = 0;
  #waiters: (() => void)[] = [];

  constructor(maxBytes: number) {
    this.#max = maxBytes;
  }

  tryTake(n: number): boolean {
    if (this.#used > 0 && this.#used + n > this.#max) return false;
    this.#used += n;
    return true;
  }

  give(n: number): void {
    this.#used -= n;
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Resolves at the next give(); callers retry tryTake(). */
  wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  get used(): number {
    return this.#used;
  }
}
