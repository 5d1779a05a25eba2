import { describe, expect, it } from 'vitest';
import { allocIoBuffer } from '../../src/block/io-buffer.js';
import { nativeFileOps } from '../../src/block/native.js';

describe('allocIoBuffer', () => {
  it('returns a zeroed buffer of the asked size', () => {
    const b = allocIoBuffer(2 * 1024 * 1024);
    expect(b.length).toBe(2 * 1024 * 1024);
    expect(b.every((x) => x === 0)).toBe(true);
  });

  it('starts on a page boundary (checked through the native helper when built)', () => {
    const native = nativeFileOps();
    if (!native?.pageOffset) return; // pure-JS install: the alignment is a guess, nothing to check
    for (const size of [4096, 65536, 2 * 1024 * 1024, 3 * 1024 * 1024 + 512]) {
      expect(native.pageOffset(allocIoBuffer(size)), `size ${size}`).toBe(0);
    }
    // The helper itself: a view one byte in moves the offset by one.
    const b = allocIoBuffer(8192);
    expect(native.pageOffset(b.subarray(1))).toBe(1);
  });
});
