// An in-memory dirty bitmap (QEMU's BdrvDirtyBitmap over an HBitmap, block/dirty-bitmap.c and
// util/hbitmap.c): one bit per `granularity` bytes of a device of `size` bytes, plus the state
// QEMU keeps beside the bits (enabled, persistent, inconsistent, readonly).
//
// Bits live in sparse 32 KiB chunks allocated on first use, so memory follows how much of the
// bitmap is dirty rather than the device size; a chunk whose bits are all set may be the shared
// read-only FULL chunk (from all-ones bitmap table entries). Bit i of the bitmap is bit (i % 8)
// of byte (i / 8): the little-endian layout of QEMU's serialization, which is also the on-disk
// layout of qcow2 bitmap data clusters (qcow2.rst "Bitmaps" / "Bitmap data").

const CHUNK_SHIFT = 18;
const CHUNK_BITS = 2 ** CHUNK_SHIFT;
const CHUNK_BYTES = CHUNK_BITS / 8;
/** Shared all-ones chunk; never written (copy on write). */
const FULL = new Uint8Array(CHUNK_BYTES).fill(0xff);

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >> 1]!;

export interface DirtyBitmapInit {
  /** The bitmap's name (QEMU bitmaps created by qemu-img always have one). */
  name: string;
  /** Bytes per bit: a power of two, at least 512. */
  granularity: number;
  /** Bytes covered (the device's virtual size). */
  size: number;
}

export class DirtyBitmap {
  readonly name: string;
  readonly granularity: number;
  readonly granularityBits: number;
  /** Records writes (bdrv_dirty_bitmap_enabled). */
  enabled = true;
  /** Stored in the image on close (bdrv_dirty_bitmap_get_persistence). */
  persistent = false;
  /** Loaded with the in-use flag set: its bits cannot be trusted and it cannot be used. */
  inconsistent = false;
  /** Belongs to a read-only image: may be read and merged from, never changed. */
  readonly = false;
  #size: number;
  #bits: number;
  #chunks = new Map<number, Uint8Array>();

  constructor(init: DirtyBitmapInit) {
    const g = init.granularity;
    if (!Number.isInteger(g) || g < 512 || g > 2 ** 31 || (g & (g - 1)) !== 0) {
      throw new RangeError(`granularity ${g} is not a power of two between 512 and 2^31`);
    }
    this.name = init.name;
    this.granularity = g;
    this.granularityBits = Math.log2(g);
    this.#size = init.size;
    this.#bits = Math.ceil(init.size / g);
  }

  /** Bytes covered (bdrv_dirty_bitmap_size). */
  get size(): number {
    return this.#size;
  }

  /** Number of bits. */
  get bitCount(): number {
    return this.#bits;
  }

  /** Mark every granule touched by [offset, offset+bytes) dirty (hbitmap_set). */
  setDirty(offset: number, bytes: number): void {
    if (bytes <= 0 || offset >= this.#size) return;
    const first = Math.floor(offset / this.granularity);
    const last = Math.min(Math.floor((offset + bytes - 1) / this.granularity), this.#bits - 1);
    this.#setBits(first, last);
  }

  /** Clear every bit (hbitmap_reset_all). */
  clear(): void {
    this.#chunks.clear();
  }

  /** Whether the granule containing byte `offset` is dirty. */
  isDirty(offset: number): boolean {
    const bit = Math.floor(offset / this.granularity);
    if (bit < 0 || bit >= this.#bits) return false;
    const chunk = this.#chunks.get(Math.floor(bit / CHUNK_BITS));
    if (!chunk) return false;
    const inChunk = bit % CHUNK_BITS;
    return (chunk[inChunk >>> 3]! & (1 << (inChunk & 7))) !== 0;
  }

  /** Number of dirty granules (hbitmap_count). */
  count(): number {
    let n = 0;
    for (const chunk of this.#chunks.values()) {
      if (chunk === FULL) {
        n += CHUNK_BITS;
        continue;
      }
      for (let i = 0; i < chunk.length; i++) n += POPCOUNT[chunk[i]!]!;
    }
    return n;
  }

  /**
   * Dirty byte ranges in ascending order, merged, clamped to the size. With `from`/`to`, only
   * the granules that meet [from, to) are looked at (the ranges stay granule-aligned, so the
   * first and last may reach outside); the cost then follows the span, not the whole bitmap
   * (hbitmap_next_dirty_area, as NBD block status walks it).
   */
  *dirtyRanges(from = 0, to = this.#size): Generator<{ offset: number; length: number }> {
    if (to <= from) return;
    const firstBit = Math.floor(from / this.granularity);
    const endBit = Math.ceil(to / this.granularity);
    for (const [first, end] of this.#runs(firstBit, endBit)) {
      const offset = first * this.granularity;
      yield { offset, length: Math.min(end * this.granularity, this.#size) - offset };
    }
  }

  /**
   * Merge `src` into this bitmap (hbitmap_merge): with equal granularity bit by bit, otherwise
   * every dirty byte range of `src` marks the granules of this bitmap it touches. The sizes must
   * be equal (the caller reports QEMU's error otherwise).
   */
  merge(src: DirtyBitmap): void {
    if (src === this) return;
    if (src.granularity !== this.granularity) {
      for (const r of src.dirtyRanges()) this.setDirty(r.offset, r.length);
      return;
    }
    for (const [index, chunk] of src.#chunks) {
      const mine = this.#chunks.get(index);
      if (mine === FULL) continue;
      if (chunk === FULL) {
        this.#chunks.set(index, FULL);
        continue;
      }
      const dst = this.#writable(index);
      for (let i = 0; i < CHUNK_BYTES; i++) dst[i] = dst[i]! | chunk[i]!;
    }
  }

  /** Change the covered size (hbitmap_truncate): new granules are clean, cut ones dropped. */
  truncate(size: number): void {
    const bits = Math.ceil(size / this.granularity);
    if (bits < this.#bits) {
      for (const index of [...this.#chunks.keys()]) {
        if (index * CHUNK_BITS >= bits) this.#chunks.delete(index);
      }
      const lastIndex = Math.floor(bits / CHUNK_BITS);
      const from = bits % CHUNK_BITS;
      if (from !== 0 && this.#chunks.has(lastIndex)) {
        const chunk = this.#writable(lastIndex);
        clearBitsFrom(chunk, from);
      }
    }
    this.#size = size;
    this.#bits = bits;
  }

  // -----------------------------------------------------------------------------------------
  // Serialization (hbitmap_serialize_part / hbitmap_deserialize_part)

  /**
   * Bytes of the serialized bitmap: whole 64-bit words, as QEMU serializes it
   * (bdrv_dirty_bitmap_serialization_size(bitmap, 0, size)).
   */
  get serializedSize(): number {
    return Math.ceil(this.#bits / 64) * 8;
  }

  /** Copy serialized bytes [byteOffset, byteOffset + out.length) into `out`. */
  readSerialized(byteOffset: number, out: Uint8Array): void {
    out.fill(0);
    let done = 0;
    while (done < out.length) {
      const pos = byteOffset + done;
      const index = Math.floor(pos / CHUNK_BYTES);
      const inChunk = pos % CHUNK_BYTES;
      const n = Math.min(CHUNK_BYTES - inChunk, out.length - done);
      const chunk = this.#chunks.get(index);
      if (chunk) out.set(chunk.subarray(inChunk, inChunk + n), done);
      done += n;
    }
  }

  /**
   * Set the bits of serialized bytes at `byteOffset` from `data` (OR: loading starts from a
   * clear bitmap). Bits beyond the bitmap's end are ignored.
   */
  orSerialized(byteOffset: number, data: Uint8Array): void {
    const limit = Math.max(0, Math.min(data.length, Math.ceil(this.#bits / 8) - byteOffset));
    let done = 0;
    while (done < limit) {
      const pos = byteOffset + done;
      const index = Math.floor(pos / CHUNK_BYTES);
      const inChunk = pos % CHUNK_BYTES;
      const n = Math.min(CHUNK_BYTES - inChunk, limit - done);
      const part = data.subarray(done, done + n);
      if (part.some((b) => b !== 0)) {
        const chunk = this.#writable(index);
        if (chunk !== FULL)
          for (let i = 0; i < n; i++) chunk[inChunk + i] = chunk[inChunk + i]! | part[i]!;
      }
      done += n;
    }
    // The last byte may carry bits past the end: keep the "no bits beyond the end" invariant.
    if (this.#bits % CHUNK_BITS !== 0) {
      const lastIndex = Math.floor(this.#bits / CHUNK_BITS);
      const chunk = this.#chunks.get(lastIndex);
      if (chunk && chunk !== FULL) clearBitsFrom(chunk, this.#bits % CHUNK_BITS);
    }
  }

  /** Set every bit of the serialized byte range (an all-ones bitmap table entry). */
  setSerializedOnes(byteOffset: number, bytes: number): void {
    const first = byteOffset * 8;
    const last = Math.min((byteOffset + bytes) * 8, this.#bits) - 1;
    if (last >= first) this.#setBits(first, last);
  }

  /**
   * Indices of the `blockBytes`-sized blocks of the serialized bitmap that hold a dirty bit, in
   * ascending order (the bitmap data clusters that must be written, store_bitmap_data).
   */
  dirtyBlocks(blockBytes: number): number[] {
    const out: number[] = [];
    const step = Math.min(blockBytes, CHUNK_BYTES);
    for (const index of [...this.#chunks.keys()].sort((a, b) => a - b)) {
      const chunk = this.#chunks.get(index)!;
      for (let off = 0; off < CHUNK_BYTES; off += step) {
        const block = Math.floor((index * CHUNK_BYTES + off) / blockBytes);
        if (out[out.length - 1] === block) continue;
        if (chunk === FULL || !isZeroRange(chunk, off, off + step)) out.push(block);
      }
    }
    return out;
  }

  // -----------------------------------------------------------------------------------------

  #writable(index: number): Uint8Array {
    let chunk = this.#chunks.get(index);
    if (!chunk) {
      chunk = new Uint8Array(CHUNK_BYTES);
      this.#chunks.set(index, chunk);
    } else if (chunk === FULL) {
      chunk = FULL.slice();
      this.#chunks.set(index, chunk);
    }
    return chunk;
  }

  /** Set bits first..last (inclusive), all below #bits. */
  #setBits(first: number, last: number): void {
    for (let index = Math.floor(first / CHUNK_BITS); index * CHUNK_BITS <= last; index++) {
      const base = index * CHUNK_BITS;
      const lo = Math.max(first, base) - base;
      const hi = Math.min(last, base + CHUNK_BITS - 1) - base;
      if (lo === 0 && hi === CHUNK_BITS - 1) {
        this.#chunks.set(index, FULL); // a whole chunk, which then lies inside the bitmap
        continue;
      }
      const chunk = this.#writable(index);
      if (chunk !== FULL) setBitRange(chunk, lo, hi);
    }
  }

  /** Runs of dirty bits as [first, end) in ascending order, within bits [from, to). */
  *#runs(from = 0, to = this.#bits): Generator<[number, number]> {
    to = Math.min(to, this.#bits);
    if (to <= from) return;
    const firstIndex = Math.floor(from / CHUNK_BITS);
    const endIndex = Math.ceil(to / CHUNK_BITS);
    // Walk the span's chunk numbers, or the allocated chunks when there are fewer of them.
    const indices =
      endIndex - firstIndex <= this.#chunks.size
        ? Array.from({ length: endIndex - firstIndex }, (_, i) => firstIndex + i)
        : [...this.#chunks.keys()]
            .filter((i) => i >= firstIndex && i < endIndex)
            .sort((a, b) => a - b);
    let start = -1;
    let end = -1;
    for (const index of indices) {
      const chunk = this.#chunks.get(index);
      if (!chunk) continue;
      const base = index * CHUNK_BITS;
      // The bits of this chunk inside the span: [lo, hi) relative to `base`.
      const lo = Math.max(from, base) - base;
      const hi = Math.min(to, base + CHUNK_BITS) - base;
      if (chunk === FULL) {
        if (base + lo !== end) {
          if (start >= 0) yield [start, end];
          start = base + lo;
        }
        end = base + hi;
        continue;
      }
      const words = new Uint32Array(chunk.buffer, chunk.byteOffset, CHUNK_BYTES / 4);
      for (let w = lo >>> 5; w < (hi + 31) >>> 5; w++) {
        let word = words[w]!;
        if (word === 0) continue;
        const wordBase = base + w * 32;
        // Drop the bits of the edge words that lie outside [lo, hi).
        if (w * 32 < lo) word &= -1 << (lo - w * 32);
        if (w * 32 + 32 > hi) word &= (1 << (hi - w * 32)) - 1;
        word >>>= 0;
        if (word === 0) continue;
        if (word === 0xffff_ffff) {
          if (wordBase !== end) {
            if (start >= 0) yield [start, end];
            start = wordBase;
          }
          end = wordBase + 32;
          continue;
        }
        for (let bit = 0; bit < 32; bit++) {
          // Uint32 words over bytes: bit `bit` of the word is bit (bit%8) of byte (bit/8) on
          // little-endian hosts, which is every host Node runs on.
          if ((word >>> bit) & 1) {
            const b = wordBase + bit;
            if (b !== end) {
              if (start >= 0) yield [start, end];
              start = b;
            }
            end = b + 1;
          }
        }
      }
    }
    if (start >= 0) yield [start, end];
  }
}

function setBitRange(chunk: Uint8Array, lo: number, hi: number): void {
  let bit = lo;
  while (bit <= hi && (bit & 7) !== 0) {
    chunk[bit >>> 3] = chunk[bit >>> 3]! | (1 << (bit & 7));
    bit++;
  }
  const fullEnd = (hi + 1) & ~7;
  if (bit < fullEnd) {
    chunk.fill(0xff, bit >>> 3, fullEnd >>> 3);
    bit = fullEnd;
  }
  while (bit <= hi) {
    chunk[bit >>> 3] = chunk[bit >>> 3]! | (1 << (bit & 7));
    bit++;
  }
}

function clearBitsFrom(chunk: Uint8Array, from: number): void {
  const byte = from >>> 3;
  if (from & 7) chunk[byte] = chunk[byte]! & ((1 << (from & 7)) - 1);
  chunk.fill(0, Math.ceil(from / 8));
}

function isZeroRange(buf: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (buf[i] !== 0) return false;
  return true;
}
