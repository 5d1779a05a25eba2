import { describe, expect, it } from 'vitest';
import { FrameReader } from '../../src/nbd/frame-reader.js';

describe('FrameReader', () => {
  it('returns views within a chunk and copies across chunks', () => {
    const r = new FrameReader();
    const a = Uint8Array.of(1, 2, 3, 4);
    r.push(a);
    r.push(Uint8Array.of(5, 6));
    const first = r.consume(2);
    expect([...first]).toEqual([1, 2]);
    expect(first.buffer).toBe(a.buffer); // a view, no copy
    expect([...r.consume(3)]).toEqual([3, 4, 5]);
    expect(r.length).toBe(1);
    expect(r.skip(5)).toBe(1);
    expect(r.length).toBe(0);
  });

  it('assembles frames from single-byte chunks', () => {
    const r = new FrameReader();
    for (let i = 0; i < 100; i++) r.push(Uint8Array.of(i));
    expect([...r.consume(100)]).toEqual([...Array(100).keys()]);
  });

  it('refuses to consume more than buffered', () => {
    const r = new FrameReader();
    r.push(Uint8Array.of(1));
    expect(() => r.consume(2)).toThrow(RangeError);
  });
});
