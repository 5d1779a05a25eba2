import { describe, expect, it } from 'vitest';
import { printfFixed, printfG, printfHexAlt, printfPad } from '../../src/core/printf.js';

describe('printfFixed (glibc %.Nf)', () => {
  it.each([
    [0.125, 2, '0.12'], // exact tie rounds to even, unlike toFixed
    [0.375, 2, '0.38'],
    [2.5, 0, '2'],
    [3.5, 0, '4'],
    [100, 2, '100.00'],
    [0, 2, '0.00'],
    [1.005, 2, '1.00'], // 1.005 is really 1.00499999999999989...
    [99.995, 2, '100.00'], // checked against glibc printf,
    [6.25, 1, '6.2'],
  ])('%s with %i digits -> %s', (x, d, want) => {
    expect(printfFixed(x, d)).toBe(want);
  });
});

describe('printfG (glibc %.Ng)', () => {
  it.each([
    [64, 3, '64'],
    [1.5, 3, '1.5'],
    [1.125, 3, '1.12'],
    [1.375, 3, '1.38'],
    [999.5, 3, '1e+03'],
    [999.7, 3, '1e+03'],
    [1000, 3, '1e+03'],
    [0.0001, 3, '0.0001'],
    [0.00001, 3, '1e-05'],
    [196, 3, '196'],
    [263.5, 3, '264'],
    [264.5, 3, '264'],
    [12345678, 3, '1.23e+07'],
    [0, 3, '0'],
  ])('%s with precision %i -> %s', (x, p, want) => {
    expect(printfG(x, p)).toBe(want);
  });
});

describe('printfG with 17 digits (%.17g, QEMU doubles)', () => {
  // Checked against glibc printf; 1e-7 needs the exact decimal exponent (log10 says -7).
  it.each([
    [1e-7, '9.9999999999999995e-08'],
    [1e-5, '1.0000000000000001e-05'],
    [0.1, '0.10000000000000001'],
    [1e23, '9.9999999999999992e+22'],
    [5e-324, '4.9406564584124654e-324'],
    [123456789.125, '123456789.125'],
    [1e21, '1e+21'],
  ])('%s -> %s', (x, want) => {
    expect(printfG(x, 17)).toBe(want);
  });
});

describe('printfHexAlt (%#x)', () => {
  it.each([
    [0, '0'], // no prefix for zero
    [1, '0x1'],
    [0x10000, '0x10000'],
    [1099511562240, '0xffffff0000'],
    [2n ** 64n - 1n, '0xffffffffffffffff'],
    [-1, '0xffffffffffffffff'], // PRIx64 of a negative int64
  ])('%s -> %s', (n, want) => {
    expect(printfHexAlt(n)).toBe(want);
  });
});

describe('printfPad (%-Ns / %Ns)', () => {
  it('pads by the given byte length and never truncates', () => {
    expect(printfPad('0', 16, true)).toBe('0               ');
    expect(printfPad('1 B', 8, false)).toBe('     1 B');
    expect(printfPad('é', 4, true, 2)).toBe('é  ');
    expect(printfPad('longer than width', 4, false)).toBe('longer than width');
  });
});
