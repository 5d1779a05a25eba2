import { describe, expect, it } from 'vitest';
import {
  byteLength,
  decodeByteString,
  encodeByteString,
  truncateCString,
} from '../../src/core/byte-string.js';

const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);

describe('byte strings (surrogateescape)', () => {
  it('decodes valid UTF-8 as text and keeps other bytes as U+DC80..U+DCFF', () => {
    expect(decodeByteString(bytes(0x61, 0xc3, 0xa9, 0xf0, 0x9f, 0x98, 0x80))).toBe('aé😀');
    expect(decodeByteString(bytes(0xff, 0xc3, 0x41, 0xc0, 0x80))).toBe('\udcff\udcc3A\udcc0\udc80');
    expect(decodeByteString(bytes(0xed, 0xa0, 0x80))).toBe('\udced\udca0\udc80'); // surrogate
  });

  it('round-trips any bytes', () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    expect(encodeByteString(decodeByteString(all))).toEqual(all);
    const mixed = bytes(0xe2, 0x82, 0xac, 0xe2, 0x82, 0x41, 0xf4, 0x90, 0x80, 0x80);
    expect(encodeByteString(decodeByteString(mixed))).toEqual(mixed);
  });

  it('counts bytes as strlen does', () => {
    expect(byteLength('abc')).toBe(3);
    expect(byteLength('é€😀')).toBe(2 + 3 + 4);
    expect(byteLength('\udcff')).toBe(1);
    expect(byteLength('\ud800')).toBe(3); // other lone surrogates: 3-byte WTF-8
    expect(encodeByteString('\ud800')).toEqual(bytes(0xed, 0xa0, 0x80));
  });

  it('truncates like pstrcpy into a fixed buffer', () => {
    expect(truncateCString('abc', 256)).toBe('abc');
    expect(truncateCString('abcdef', 4)).toBe('abc');
    expect(truncateCString('ab\u0000cd', 256)).toBe('ab');
    expect(truncateCString(`${'x'.repeat(254)}é`, 256)).toBe(`${'x'.repeat(254)}\udcc3`);
    expect(truncateCString('é'.repeat(130), 256)).toBe(`${'é'.repeat(127)}\udcc3`);
    expect(truncateCString(`${'é'.repeat(127)}abc`, 256)).toBe(`${'é'.repeat(127)}a`);
  });
});
