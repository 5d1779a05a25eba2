// BufferPool: recycle the large buffers the transmission phase needs for every READ reply and
// WRITE payload. Allocating a fresh 256 KiB..32 MiB Buffer per request costs page faults and GC
// work that dominated throughput; reusing them (after the socket has taken the bytes, or after
// the device has written them) more than doubles READ throughput. Buffers are kept per exact
// size, up to a total byte budget.

export class BufferPool {
  readonly #free = new Map<number, Uint8Array[]>();
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
    return Buffer.allocUnsafeSlow(size);
  }

  /** Hand a buffer back once nothing refers to its bytes any more. */
  give(buf: Uint8Array): void {
    // Only whole buffers from take() are pooled (views into socket chunks are not ours).
    if (buf.byteOffset !== 0 || buf.byteLength !== buf.buffer.byteLength) return;
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
