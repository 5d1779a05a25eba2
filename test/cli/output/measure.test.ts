import { describe, expect, it } from 'vitest';
import { formatMeasureHuman, formatMeasureJson } from '../../../src/cli/output/measure.js';

// Copied from qemu-img 7.2.22 measure output.
describe('measure output', () => {
  it('prints bitmaps when present', () => {
    const info = { required: 393216, 'fully-allocated': 17104896, bitmaps: 589824 };
    expect(formatMeasureJson(info)).toBe(
      '{\n    "bitmaps": 589824,\n    "required": 393216,\n    "fully-allocated": 17104896\n}\n',
    );
    expect(formatMeasureHuman(info)).toBe(
      'required size: 393216\nfully allocated size: 17104896\nbitmaps size: 589824\n',
    );
  });

  it('prints --size results without bitmaps', () => {
    const info = { required: 393216, 'fully-allocated': 1074135040 };
    expect(formatMeasureJson(info)).toBe(
      '{\n    "required": 393216,\n    "fully-allocated": 1074135040\n}\n',
    );
    expect(formatMeasureHuman(info)).toBe(
      'required size: 393216\nfully allocated size: 1074135040\n',
    );
  });
});
