import { describe, expect, it } from 'vitest';
import {
  ByteReader,
  ByteWriter,
  bufferView,
  isZero,
  isZeroRange,
  readU32BE,
  bigToSafe,
} from '../../src/core/bytes.js';
import { CorruptImageError } from '../../src/core/errors.js';

describe('ByteReader / ByteWriter', () => {
  it('round-trips big-endian fields', () => {
    const w = ByteWriter.alloc(32);
    w.u8(0xab).u16(0x1234).u32(0xdeadbeef).u64(0x0002030405060708n).u32le(7);
    const r = new ByteReader(w.buf, 'test');
    expect(r.u8()).toBe(0xab);
    expect(r.u16()).toBe(0x1234);
    expect(r.u32()).toBe(0xdeadbeef);
    expect(r.u64()).toBe(0x0002030405060708);
    expect(r.u32le()).toBe(7);
    expect(readU32BE(w.buf, 3)).toBe(0xdeadbeef);
  });

  it('names the structure and field on truncation', () => {
    const r = new ByteReader(new Uint8Array(6), 'qcow2 header');
    r.u32('magic');
    expect(() => r.u32('version')).toThrow(
      'truncated qcow2 header field version: need 4 bytes at offset 4, have 2',
    );
    expect(() => r.u32('version')).toThrow(CorruptImageError);
  });

  it('refuses u64 values beyond 2^53', () => {
    const w = ByteWriter.alloc(8).u64(2n ** 60n);
    expect(() => new ByteReader(w.buf, 'hdr').u64('size')).toThrow(
      /hdr field size is too large: 0x1000000000000000/,
    );
    expect(bigToSafe(2n ** 53n - 1n, 'x')).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('ByteWriter refuses to overflow', () => {
    expect(() => ByteWriter.alloc(2).u32(1)).toThrow(RangeError);
  });
});

describe('isZero', () => {
  it('detects zero and non-zero buffers at any alignment', () => {
    const big = new Uint8Array(4096 + 8);
    for (const off of [0, 1, 3, 4, 7]) {
      const view = big.subarray(off, off + 4096);
      expect(isZero(view)).toBe(true);
      view[4095] = 1;
      expect(isZero(view)).toBe(false);
      view[4095] = 0;
      view[0] = 1;
      expect(isZero(view)).toBe(false);
      view[0] = 0;
    }
    expect(isZero(new Uint8Array(0))).toBe(true);
  });

  it('finds a single non-zero byte anywhere, also past the 64 KiB compare block', () => {
    const buf = new Uint8Array(3 * 65536 + 100);
    for (const at of [1, 63, 64, 65, 65535, 65536, 65537, 2 * 65536 + 7, buf.length - 2]) {
      buf[at] = 0x80;
      expect(isZero(buf), `byte ${at}`).toBe(false);
      expect(isZero(buf.subarray(1, 40)), `short view, byte ${at}`).toBe(at >= 40);
      buf[at] = 0;
    }
    expect(isZero(buf)).toBe(true);
  });

  it('isZeroRange looks only at its range', () => {
    const buf = new Uint8Array(200_000);
    buf[100] = 1;
    buf[150_000] = 1;
    const v = bufferView(buf);
    expect(isZeroRange(v, 0, 100)).toBe(true);
    expect(isZeroRange(v, 0, 101)).toBe(false);
    expect(isZeroRange(v, 101, 150_000)).toBe(true);
    expect(isZeroRange(v, 101, 150_001)).toBe(false);
    expect(isZeroRange(v, 150_001, 200_000)).toBe(true);
  });
});
