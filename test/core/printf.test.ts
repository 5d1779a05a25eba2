import { describe, expect, it } from 'vitest';
import { printfFixed, printfG } from '../../src/core/printf.js';

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
