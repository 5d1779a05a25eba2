import { describe, expect, it } from 'vitest';
import { formatSize, parseSize, strtosz } from '../../src/core/units.js';
import { InvalidArgumentError } from '../../src/core/errors.js';

describe('parseSize (qemu_strtosz + cvtnum)', () => {
  it.each([
    ['0', 0],
    ['512', 512],
    ['512b', 512],
    ['1k', 1024],
    ['1K', 1024],
    ['64M', 64 * 2 ** 20],
    ['1G', 2 ** 30],
    ['1T', 2 ** 40],
    ['1.5G', 1.5 * 2 ** 30],
    ['1.k', 1024],
    ['0x1000', 4096],
    ['8P', 8 * 2 ** 50 - 0], // fits below 2^53
  ])('%s -> %d', (text, want) => {
    if (want > Number.MAX_SAFE_INTEGER) return;
    expect(parseSize(text)).toBe(want);
  });

  it.each(['', 'abc', '-1', '1.5', '1e3', '0x1.8', '1Q', '1 G', '--5'])('rejects %j', (text) => {
    expect(() => parseSize(text, 'image size')).toThrow(InvalidArgumentError);
  });

  it('reports QEMU-style messages', () => {
    expect(() => parseSize('abc', 'image size')).toThrow(
      /^Invalid image size specified. You may use k, M, G, T, P or E suffixes/,
    );
    expect(() => parseSize('16E', 'image size')).toThrow(
      'Invalid image size specified. Must be between 0 and 9223372036854775807.',
    );
  });

  it('flags overflow beyond 2^64 as a range error', () => {
    expect(strtosz('16E')).toEqual({ ok: false, reason: 'range' });
    expect(strtosz('15E')).toEqual({ ok: true, value: 15n * 2n ** 60n });
  });
});

describe('formatSize (size_to_str)', () => {
  it.each([
    [0, '0 B'],
    [512, '512 B'],
    [999, '999 B'],
    [1000, '0.977 KiB'],
    [1024, '1 KiB'],
    [200704, '196 KiB'],
    [270336, '264 KiB'],
    [4 * 2 ** 20, '4 MiB'],
    [64 * 2 ** 20, '64 MiB'],
    [1.5 * 2 ** 30, '1.5 GiB'],
    [2 ** 40, '1 TiB'],
    [1152, '1.12 KiB'],
  ])('%d -> %s', (n, want) => {
    expect(formatSize(n)).toBe(want);
  });
});
