import { describe, expect, it } from 'vitest';
import {
  checkOutcome,
  formatCheckHuman,
  formatCheckJson,
  formatRepairSummary,
  imageCheckFromCounts,
} from '../../../src/cli/output/check.js';

// Expected texts copied from qemu-img 7.2.22 check output.
const counts = {
  checkErrors: 0,
  corruptions: 0,
  leaks: 2,
  corruptionsFixed: 0,
  leaksFixed: 0,
  imageEndOffset: 589824,
  totalClusters: 128,
  allocatedClusters: 2,
  fragmentedClusters: 1,
  compressedClusters: 1,
};

describe('check output', () => {
  it('prints leaks (exit 3)', () => {
    const check = imageCheckFromCounts('leak.qcow2', 'qcow2', counts);
    expect(formatCheckJson(check)).toBe(`{
    "image-end-offset": 589824,
    "compressed-clusters": 1,
    "total-clusters": 128,
    "check-errors": 0,
    "leaks": 2,
    "allocated-clusters": 2,
    "filename": "leak.qcow2",
    "format": "qcow2",
    "fragmented-clusters": 1
}
`);
    expect(formatCheckHuman(check)).toBe(`
2 leaked clusters were found on the image.
This means waste of disk space, but no harm to data.
2/128 = 1.56% allocated, 50.00% fragmented, 50.00% compressed clusters
Image end offset: 589824
`);
    expect(checkOutcome(check)).toEqual({ exitCode: 3 });
  });

  it('prints corruptions with leaks (exit 2)', () => {
    const check = imageCheckFromCounts('refbad.qcow2', 'qcow2', {
      ...counts,
      corruptions: 2,
      leaks: 1,
      allocatedClusters: 1,
      fragmentedClusters: 0,
      compressedClusters: 0,
      imageEndOffset: 458752,
    });
    expect(formatCheckHuman(check)).toBe(`
2 errors were found on the image.
Data may be corrupted, or further writes to the image may corrupt it.

1 leaked clusters were found on the image.
This means waste of disk space, but no harm to data.
1/128 = 0.78% allocated, 0.00% fragmented, 0.00% compressed clusters
Image end offset: 458752
`);
    expect(checkOutcome(check)).toEqual({ exitCode: 2 });
  });

  it('prints a clean image and the repair summary', () => {
    const check = imageCheckFromCounts('a.qcow2', 'qcow2', {
      ...counts,
      leaks: 0,
      leaksFixed: 1,
      corruptionsFixed: 1,
      allocatedClusters: 1,
      fragmentedClusters: 0,
      compressedClusters: 0,
      imageEndOffset: 524288,
    });
    expect(formatRepairSummary(1, 1) + formatCheckHuman(check))
      .toBe(`The following inconsistencies were found and repaired:

    1 leaked clusters
    1 corruptions

Double checking the fixed image now...
No errors were found on the image.
1/128 = 0.78% allocated, 0.00% fragmented, 0.00% compressed clusters
Image end offset: 524288
`);
    expect(formatCheckJson(check)).toContain('"corruptions-fixed": 1,');
    expect(checkOutcome(check)).toEqual({ exitCode: 0 });
  });

  it('leaves zero counts out and reports internal errors (exit 1)', () => {
    const zero = { ...counts, leaks: 0, imageEndOffset: 0, totalClusters: 0 };
    const check = imageCheckFromCounts('e.qcow2', 'qcow2', { ...zero, checkErrors: 3 });
    expect(check).toEqual({
      filename: 'e.qcow2',
      format: 'qcow2',
      'check-errors': 3,
      'allocated-clusters': 2,
      'fragmented-clusters': 1,
      'compressed-clusters': 1,
    });
    expect(formatCheckHuman(check)).toBe('\n3 internal errors have occurred during the check.\n');
    expect(checkOutcome(check)).toEqual({ exitCode: 1, error: 'Check failed' });
  });
});
