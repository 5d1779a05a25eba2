// Bounds-checked byte cursors for on-disk and on-wire structures.
// Every read names what it was reading, so a short or hostile buffer produces
// "truncated <what>: need N bytes at offset O, have L" instead of a RangeError.
// 64-bit fields are read as BigInt and converted to number once, with a clear
// error beyond Number.MAX_SAFE_INTEGER (DESIGN.md: offsets are safe integers).

import { CorruptImageError, type VmforgeError } from './errors.js';

/** Builds the error thrown when a structure is too short; callers may swap in ProtocolError. */
export type TruncationErrorFactory = (message: string) => VmforgeError;

const defaultTruncation: TruncationErrorFactory = (m) => new CorruptImageError(m);

export const TWO_POW_32 = 0x1_0000_0000;

export class ByteReader {
  readonly buf: Uint8Array;
  readonly view: DataView;
  pos: number;
  readonly #what: string;
  readonly #error: TruncationErrorFactory;

  constructor(
    buf: Uint8Array,
    what = 'structure',
    pos = 0,
    error: TruncationErrorFactory = defaultTruncation,
  ) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = pos;
    this.#what = what;
    this.#error = error;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  need(n: number, field = ''): void {
    if (n < 0 || this.pos + n > this.buf.length) {
      const name = field ? `${this.#what} field ${field}` : this.#what;
      throw this.#error(
        `truncated ${name}: need ${n} bytes at offset ${this.pos}, have ${Math.max(0, this.buf.length - this.pos)}`,
      );
    }
  }

  u8(field = ''): number {
    this.need(1, field);
    return this.view.getUint8(this.pos++);
  }

  u16(field = ''): number {
    this.need(2, field);
    const v = this.view.getUint16(this.pos, false);
    this.pos += 2;
    return v;
  }

  u32(field = ''): number {
    this.need(4, field);
    const v = this.view.getUint32(this.pos, false);
    this.pos += 4;
    return v;
  }

  u64big(field = ''): bigint {
    this.need(8, field);
    const v = this.view.getBigUint64(this.pos, false);
    this.pos += 8;
    return v;
  }

  /** A big-endian u64 that must fit in a safe integer (offsets, sizes). */
  u64(field = ''): number {
    const v = this.u64big(field);
    return bigToSafe(v, field ? `${this.#what} field ${field}` : this.#what);
  }

  u16le(field = ''): number {
    this.need(2, field);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }

  u32le(field = ''): number {
    this.need(4, field);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  u64lebig(field = ''): bigint {
    this.need(8, field);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }

  u64le(field = ''): number {
    return bigToSafe(this.u64lebig(field), field ? `${this.#what} field ${field}` : this.#what);
  }

  /** A view (not a copy) of the next n bytes. */
  bytes(n: number, field = ''): Uint8Array {
    this.need(n, field);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  skip(n: number, field = ''): void {
    this.need(n, field);
    this.pos += n;
  }
}

export class ByteWriter {
  readonly buf: Uint8Array;
  readonly view: DataView;
  pos: number;

  constructor(buf: Uint8Array, pos = 0) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = pos;
  }

  static alloc(size: number): ByteWriter {
    return new ByteWriter(new Uint8Array(size));
  }

  #need(n: number): void {
    if (this.pos + n > this.buf.length) {
      throw new RangeError(
        `ByteWriter overflow: ${n} bytes at offset ${this.pos} exceed buffer of ${this.buf.length}`,
      );
    }
  }

  u8(v: number): this {
    this.#need(1);
    this.view.setUint8(this.pos++, v);
    return this;
  }

  u16(v: number): this {
    this.#need(2);
    this.view.setUint16(this.pos, v, false);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.#need(4);
    this.view.setUint32(this.pos, v >>> 0, false);
    this.pos += 4;
    return this;
  }

  u64(v: number | bigint): this {
    this.#need(8);
    this.view.setBigUint64(this.pos, BigInt(v), false);
    this.pos += 8;
    return this;
  }

  u16le(v: number): this {
    this.#need(2);
    this.view.setUint16(this.pos, v, true);
    this.pos += 2;
    return this;
  }

  u32le(v: number): this {
    this.#need(4);
    this.view.setUint32(this.pos, v >>> 0, true);
    this.pos += 4;
    return this;
  }

  u64le(v: number | bigint): this {
    this.#need(8);
    this.view.setBigUint64(this.pos, BigInt(v), true);
    this.pos += 8;
    return this;
  }

  bytes(src: Uint8Array): this {
    this.#need(src.length);
    this.buf.set(src, this.pos);
    this.pos += src.length;
    return this;
  }

  zeros(n: number): this {
    this.#need(n);
    this.buf.fill(0, this.pos, this.pos + n);
    this.pos += n;
    return this;
  }

  /** Advance to the next multiple of `align`, zero-filling. */
  align(align: number): this {
    const pad = (align - (this.pos % align)) % align;
    return this.zeros(pad);
  }
}

/** Convert a u64 to a number, refusing values beyond 2^53 (8 PiB) with a clear error. */
export function bigToSafe(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CorruptImageError(`${what} is too large: 0x${v.toString(16)} exceeds 2^53`);
  }
  return Number(v);
}

// Hot-path helpers for table entries (L1/L2/refcount tables): read a big-endian u64 as two u32
// halves without allocating BigInts. `hi` carries bits 32-63.

export function readU32BE(buf: Uint8Array, off: number): number {
  return ((buf[off]! << 24) | (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!) >>> 0;
}

export function writeU32BE(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = (v >>> 16) & 0xff;
  buf[off + 2] = (v >>> 8) & 0xff;
  buf[off + 3] = v & 0xff;
}

/** 64 KiB of zeros that isZeroRange compares against; never written. */
const ZERO_BLOCK = Buffer.alloc(64 * 1024);

/** A Buffer over the same memory as `buf` (no copy), for Buffer's memcmp-based compare(). */
export function bufferView(buf: Uint8Array): Buffer {
  return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
}

/**
 * True if bytes [start, end) of `view` are all zero. memcmp against a zero block (vectorised in
 * libc) runs several times faster than a word loop in JS: zero detection was a visible part of
 * a convert's CPU time.
 */
export function isZeroRange(view: Buffer, start: number, end: number): boolean {
  for (let pos = start; pos < end;) {
    const n = Math.min(ZERO_BLOCK.length, end - pos);
    if (view.compare(ZERO_BLOCK, 0, n, pos, pos + n) !== 0) return false;
    pos += n;
  }
  return true;
}

/** True if every byte of `buf` is zero. */
export function isZero(buf: Uint8Array): boolean {
  const len = buf.length;
  if (len === 0) return true;
  // Data is usually rejected by its first or last byte, without building a view.
  if (buf[0] !== 0 || buf[len - 1] !== 0) return false;
  if (len <= 64) {
    for (let i = 1; i < len - 1; i++) if (buf[i] !== 0) return false;
    return true;
  }
  return isZeroRange(bufferView(buf), 0, len);
}
