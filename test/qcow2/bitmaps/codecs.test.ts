import { describe, expect, it } from 'vitest';
import {
  BME_FLAG_AUTO,
  BME_FLAG_IN_USE,
  decodeBitmapDirectory,
  dirEntrySize,
  encodeBitmapDirectory,
  type Qcow2Bitmap,
} from '../../../src/qcow2/bitmaps/directory.js';
import {
  decodeBitmapTable,
  encodeBitmapTable,
  TABLE_ENTRY_ONES,
} from '../../../src/qcow2/bitmaps/table.js';

const hex = (s: string) =>
  Uint8Array.from(s.replace(/\s+/g, '').match(/../g)!, (h) => parseInt(h, 16));
const CS = 65536;
const SIZE = 64 * 1024 * 1024;

/** Two entries as QEMU 7.2 writes them: "b0" (auto, 64 KiB) and "bb1" (disabled, 4 KiB). */
const DIR = hex(`
  0000000000040000 00000001 00000002 01 10 0002 00000000 6230 000000000000
  0000000000060000 00000001 00000000 01 0c 0003 00000000 626231 0000000000
`);

const entries: Qcow2Bitmap[] = [
  {
    name: 'b0',
    tableOffset: 0x40000,
    tableSize: 1,
    flags: BME_FLAG_AUTO,
    type: 1,
    granularityBits: 16,
  },
  { name: 'bb1', tableOffset: 0x60000, tableSize: 1, flags: 0, type: 1, granularityBits: 12 },
];

describe('bitmap directory codec', () => {
  it('decodes a QEMU directory and encodes it back byte for byte', () => {
    expect(decodeBitmapDirectory(DIR, 2, CS, SIZE)).toEqual(entries);
    expect(encodeBitmapDirectory(entries, CS, SIZE)).toEqual(DIR);
    expect(dirEntrySize(2)).toBe(32);
    expect(dirEntrySize(8)).toBe(32);
    expect(dirEntrySize(9)).toBe(40);
  });

  it('keeps non-UTF-8 names byte-exact', () => {
    const odd = [{ ...entries[0]!, name: 'a\udcffb' }];
    const dir = encodeBitmapDirectory(odd, CS, SIZE)!;
    expect([...dir.subarray(24, 27)]).toEqual([0x61, 0xff, 0x62]);
    expect(decodeBitmapDirectory(dir, 1, CS, SIZE)[0]!.name).toBe('a\udcffb');
  });

  it("reports QEMU's messages for broken directories", () => {
    const d =
      (buf: Uint8Array, nb = 2) =>
      () =>
        decodeBitmapDirectory(buf, nb, CS, SIZE);
    expect(d(DIR, 1)).toThrow('More bitmaps found than specified in header extension');
    expect(d(DIR, 3)).toThrow('Less bitmaps found than specified in header extension');
    expect(d(DIR.subarray(0, 40))).toThrow('Broken bitmap directory');
    expect(d(DIR.subarray(0, 20))).toThrow('Broken bitmap directory');
    expect(d(new Uint8Array(0))).toThrow('Requested bitmap directory size is zero');
    const extra = DIR.slice();
    extra[23] = 8;
    expect(d(extra)).toThrow('Bitmap extra data is not supported');
    const reserved = DIR.slice();
    reserved[12] = 0x80;
    expect(d(reserved)).toThrow("Bitmap 'b0' doesn't satisfy the constraints");
    const unaligned = DIR.slice();
    unaligned[6] = 0x01;
    expect(d(unaligned)).toThrow("Bitmap 'b0' doesn't satisfy the constraints");
    const badType = DIR.slice();
    badType[32 + 16] = 2;
    expect(d(badType)).toThrow("Bitmap 'bb1' doesn't satisfy the constraints");
  });

  it('checks that a consistent bitmap covers the image, an in-use one need not', () => {
    // One 64 KiB table cluster of 4 KiB granules covers 2 GiB.
    expect(() => decodeBitmapDirectory(DIR, 2, CS, 2 ** 31 + 1)).toThrow(
      "Bitmap 'bb1' doesn't satisfy the constraints",
    );
    const inUse = [entries[0]!, { ...entries[1]!, flags: BME_FLAG_IN_USE }];
    const dir = encodeBitmapDirectory(inUse, CS, 2 ** 31)!;
    expect(decodeBitmapDirectory(dir, 2, CS, 2 ** 34)[1]!.flags).toBe(BME_FLAG_IN_USE);
    expect(encodeBitmapDirectory(entries, CS, 2 ** 34)).toBeUndefined();
  });

  it('refuses to encode what bitmap_list_store refuses', () => {
    expect(encodeBitmapDirectory([], CS, SIZE)).toBeUndefined();
    expect(encodeBitmapDirectory([{ ...entries[0]!, tableSize: 0 }], CS, SIZE)).toBeUndefined();
    expect(
      encodeBitmapDirectory([{ ...entries[0]!, granularityBits: 8 }], CS, SIZE),
    ).toBeUndefined();
    expect(
      encodeBitmapDirectory([{ ...entries[0]!, name: 'x'.repeat(1024) }], CS, SIZE),
    ).toBeUndefined();
  });
});

describe('bitmap table codec', () => {
  it('decodes zeros, ones and data entries and encodes them back', () => {
    const bytes = hex('0000000000000000 0000000000000001 0000000000050000 00ff000000010000');
    const table = decodeBitmapTable(bytes, 4, CS)!;
    expect(table).toEqual([0, TABLE_ENTRY_ONES, 0x50000, 0xff000000010000]);
    expect(encodeBitmapTable(table)).toEqual(bytes);
  });

  it('refuses what check_table_entry refuses', () => {
    const bad = (s: string) => decodeBitmapTable(hex(s), 1, CS);
    expect(bad('0000000000000002')).toBeUndefined(); // reserved bit 1
    expect(bad('0100000000000000')).toBeUndefined(); // reserved bit 56
    expect(bad('0000000000050001')).toBeUndefined(); // offset with the all-ones bit
    expect(bad('0000000000000200')).toBeUndefined(); // offset not cluster aligned
    expect(decodeBitmapTable(hex('0000000000000200'), 1, 512)).toEqual([512]);
  });
});
