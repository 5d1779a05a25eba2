// FrameReader: accumulate socket chunks and hand out exact byte counts (undici's ByteParser
// shape). Knows nothing about NBD. consume(n) returns a view when the bytes sit in one chunk and
// a copy only when they span chunks, so large WRITE payloads usually cost no copy.

export class FrameReader {
  #chunks: Uint8Array[] = [];
  /** Offset into #chunks[0] of the first unconsumed byte. */
  #head = 0;
  #length = 0;

  /** Unconsumed bytes buffered. */
  get length(): number {
    return this.#length;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /**
   * Take exactly `n` bytes (n <= length). `alloc` provides the buffer when the bytes span
   * chunks and must be copied (a buffer pool, for large payloads).
   */
  consume(
    n: number,
    alloc: (size: number) => Uint8Array = (size) => Buffer.allocUnsafe(size),
  ): Uint8Array {
    if (n > this.#length || n < 0) {
      throw new RangeError(`FrameReader.consume(${n}) with ${this.#length} bytes buffered`);
    }
    if (n === 0) return new Uint8Array(0);
    const first = this.#chunks[0]!;
    const avail = first.length - this.#head;
    if (n <= avail) {
      const out = first.subarray(this.#head, this.#head + n);
      this.#advance(n);
      return out;
    }
    const out = alloc(n);
    let filled = 0;
    while (filled < n) {
      const c = this.#chunks[0]!;
      const take = Math.min(c.length - this.#head, n - filled);
      out.set(c.subarray(this.#head, this.#head + take), filled);
      filled += take;
      this.#advance(take);
    }
    return out;
  }

  /** Drop up to `n` bytes; returns how many were dropped. */
  skip(n: number): number {
    let dropped = 0;
    while (dropped < n && this.#length > 0) {
      const c = this.#chunks[0]!;
      const take = Math.min(c.length - this.#head, n - dropped);
      this.#advance(take);
      dropped += take;
    }
    return dropped;
  }

  /** Remove and return everything buffered (used when handing a socket to TLS). */
  drain(): Uint8Array {
    return this.consume(this.#length);
  }

  #advance(n: number): void {
    this.#head += n;
    this.#length -= n;
    const first = this.#chunks[0];
    if (first && this.#head === first.length) {
      this.#chunks.shift();
      this.#head = 0;
    }
  }
}
