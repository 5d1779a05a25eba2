import { describe, expect, it } from 'vitest';
import {
  formatLocalDate,
  formatSnapshotList,
  snapshotHeaderRow,
  snapshotRow,
} from '../../../src/cli/output/snapshot-list.js';
import type { SnapshotInfo } from '../../../src/img/qapi-types.js';

/** A snapshot; `icount: undefined` leaves the member out (QEMU's "no icount"). */
const sn = (over: { [K in keyof SnapshotInfo]?: SnapshotInfo[K] | undefined }): SnapshotInfo => {
  const base = {
    id: '1',
    name: 'snap1',
    'vm-state-size': 0,
    'date-sec': 0,
    'date-nsec': 0,
    'vm-clock-sec': 0,
    'vm-clock-nsec': 0,
    icount: 0,
    ...over,
  };
  return Object.fromEntries(
    Object.entries(base).filter(([, v]) => v !== undefined),
  ) as unknown as SnapshotInfo;
};

// Expected rows copied from `TZ=UTC qemu-img snapshot -l` (7.2.22) on images whose snapshot
// table was patched to these values.
describe('snapshot table (bdrv_snapshot_dump)', () => {
  it('prints the header', () => {
    expect(snapshotHeaderRow()).toBe(
      'ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT',
    );
  });

  it.each([
    [sn({}), '1         snap1                 0 B 1970-01-01 00:00:00 00:00:00.000          0'],
    [
      sn({
        id: '2',
        name: 'ab\tc',
        'vm-state-size': 1,
        'date-sec': 1700000000,
        'date-nsec': 123456789,
        'vm-clock-sec': 1,
        'vm-clock-nsec': 500000000,
      }),
      '2         ab\tc                  1 B 2023-11-14 22:13:20 00:00:01.500          0',
    ],
    [
      // 100 hours: the clock column grows; no icount (-1 on disk) leaves ICOUNT empty
      sn({
        id: '3',
        name: 'снимок',
        'vm-state-size': 1023,
        'date-sec': 1711846800,
        'vm-clock-sec': 360000,
        'vm-clock-nsec': 999000000,
        icount: undefined,
      }),
      '3         снимок     0.999 KiB 2024-03-31 01:00:00100:00:00.999           ',
    ],
    [
      // vm_clock_nsec = 2^64 - 1
      sn({
        id: '4',
        name: 'x',
        'vm-state-size': 1024000,
        'date-sec': 1730000000,
        'vm-clock-sec': 18446744073,
        'vm-clock-nsec': 709551615,
        icount: 12345678,
      }),
      '4         x                0.977 MiB 2024-10-27 03:33:205124095:34:33.709   12345678',
    ],
    [
      sn({
        id: '6',
        name: 'x',
        'vm-state-size': 2 ** 40,
        'date-sec': 1234567890,
        'vm-clock-sec': 3599,
        'vm-clock-nsec': 999999999,
      }),
      '6         x                   1 TiB 2009-02-13 23:31:30 00:59:59.999          0',
    ],
  ])('row %#', (info, want) => {
    expect(snapshotRow(info, { timeZone: 'UTC' })).toBe(want);
  });

  it("pads names by bytes and cuts them at 255 bytes like QEMU's char name[256]", () => {
    const long = snapshotRow(sn({ name: 'L'.repeat(300) }), { timeZone: 'UTC' });
    expect(long).toBe(
      `1         ${'L'.repeat(255)}      0 B 1970-01-01 00:00:00 00:00:00.000          0`,
    );
    // 'é' is two bytes: "éé" fills 4 of the 16 columns
    expect(snapshotRow(sn({ name: 'éé' }), { timeZone: 'UTC' })).toBe(
      `1         éé${' '.repeat(12 + 1 + 5)}0 B 1970-01-01 00:00:00 00:00:00.000          0`,
    );
  });

  it('formats dates in the given zone or the process-local zone', () => {
    expect(formatLocalDate(1700000000, 'America/New_York')).toBe('2023-11-14 17:13:20');
    expect(formatLocalDate(4294967295, 'Asia/Kolkata')).toBe('2106-02-07 11:58:15');
    expect(formatLocalDate(-1, 'UTC')).toBe('2106-02-07 06:28:15'); // date_sec is a uint32
    const t = new Date(1700000000 * 1000);
    const local = `${t.getFullYear()}-${String(t.getMonth() + 1).padStart(2, '0')}-${String(t.getDate()).padStart(2, '0')}`;
    expect(formatLocalDate(1700000000).startsWith(local)).toBe(true);
  });

  it('prints the whole list, or nothing without snapshots', () => {
    expect(formatSnapshotList([])).toBe('');
    expect(formatSnapshotList([sn({})], { timeZone: 'UTC' })).toBe(
      'Snapshot list:\n' +
        'ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n' +
        '1         snap1                 0 B 1970-01-01 00:00:00 00:00:00.000          0\n',
    );
  });
});
