import { describe, expect, it } from 'vitest';
import {
  formatMap,
  MAP_HUMAN_UNMAPPABLE,
  MapNotRepresentableError,
  MapPrinter,
  mapEntriesMergeable,
} from '../../../src/cli/output/map.js';
import type { MapEntry } from '../../../src/img/qapi-types.js';

const e = (start: number, length: number, over: Partial<MapEntry>): MapEntry => ({
  start,
  length,
  depth: 0,
  present: true,
  zero: false,
  data: true,
  ...over,
});

// qemu-img 7.2.22 map of a 3-deep chain (raw base <- mid.qcow2 <- top.qcow2, in "chain dir")
// whose top has a compressed cluster at 2 MiB.
const chain: MapEntry[] = [
  e(0, 524288, { depth: 2, offset: 0, filename: 'chain dir/base.raw' }),
  e(524288, 524288, { depth: 1, offset: 327680, filename: 'chain dir/mid.qcow2' }),
  e(1048576, 65536, { offset: 327680, filename: 'chain dir/top.qcow2' }),
  e(1114112, 458752, { depth: 1, offset: 917504, filename: 'chain dir/mid.qcow2' }),
  e(1572864, 524288, {
    depth: 2,
    zero: true,
    data: false,
    offset: 1572864,
    filename: 'chain dir/base.raw',
  }),
  e(2097152, 65536, {}),
  e(2162688, 6225920, {
    depth: 2,
    zero: true,
    data: false,
    offset: 2162688,
    filename: 'chain dir/base.raw',
  }),
  e(8388608, 65536, { depth: 1, zero: true, data: false }),
  e(16777216, 4194304, { present: false, zero: true, data: false }),
];

describe('map output', () => {
  it('prints JSON lines by hand (7.2: no "compressed")', () => {
    expect(formatMap(chain, 'json')).toEqual({
      text: `[{ "start": 0, "length": 524288, "depth": 2, "present": true, "zero": false, "data": true, "offset": 0},
{ "start": 524288, "length": 524288, "depth": 1, "present": true, "zero": false, "data": true, "offset": 327680},
{ "start": 1048576, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},
{ "start": 1114112, "length": 458752, "depth": 1, "present": true, "zero": false, "data": true, "offset": 917504},
{ "start": 1572864, "length": 524288, "depth": 2, "present": true, "zero": true, "data": false, "offset": 1572864},
{ "start": 2097152, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true},
{ "start": 2162688, "length": 6225920, "depth": 2, "present": true, "zero": true, "data": false, "offset": 2162688},
{ "start": 8388608, "length": 65536, "depth": 1, "present": true, "zero": true, "data": false},
{ "start": 16777216, "length": 4194304, "depth": 0, "present": false, "zero": true, "data": false}]
`,
    });
  });

  it('prints human rows up to data it cannot map, then the error', () => {
    expect(formatMap(chain, 'human')).toEqual({
      text: `Offset          Length          Mapped to       File
0               0x80000         0               chain dir/base.raw
0x80000         0x80000         0x50000         chain dir/mid.qcow2
0x100000        0x10000         0x50000         chain dir/top.qcow2
0x110000        0x70000         0xe0000         chain dir/mid.qcow2
`,
      error: MAP_HUMAN_UNMAPPABLE,
    });
    expect(MAP_HUMAN_UNMAPPABLE).toBe('File contains external, encrypted or compressed clusters.');
    const p = new MapPrinter('human');
    p.begin();
    expect(() => p.entry(e(0, 512, {}))).toThrow(MapNotRepresentableError);
  });

  it('only fails on the first entry for data that also reads as zero', () => {
    // dump_map_entry folds later zero entries to data=false before dumping them
    const zeroData = e(512, 512, { zero: true });
    expect(formatMap([e(0, 512, { offset: 0 }), zeroData], 'human').error).toBeUndefined();
    expect(formatMap([zeroData], 'human').error).toBe(MAP_HUMAN_UNMAPPABLE);
  });

  it('prints the zero-length entry when there is nothing to map', () => {
    expect(formatMap([], 'json', 1073741824).text).toBe(
      '[{ "start": 1073741824, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}]\n',
    );
    expect(formatMap([], 'human').text).toBe(
      'Offset          Length          Mapped to       File\n',
    );
  });

  it('merges like entry_mergeable', () => {
    const a = e(0, 512, { offset: 1024, filename: 'f' });
    expect(mapEntriesMergeable(a, e(512, 512, { offset: 1536, filename: 'f' }))).toBe(true);
    expect(mapEntriesMergeable(a, e(512, 512, { offset: 2048, filename: 'f' }))).toBe(false);
    expect(mapEntriesMergeable(a, e(512, 512, { offset: 1536, filename: 'g' }))).toBe(false);
    expect(mapEntriesMergeable(a, e(512, 512, { offset: 1536 }))).toBe(false);
    expect(mapEntriesMergeable(a, e(512, 512, { offset: 1536, filename: 'f', depth: 1 }))).toBe(
      false,
    );
    const hole = e(0, 512, { data: false, zero: true, present: false });
    expect(
      mapEntriesMergeable(hole, e(512, 512, { data: false, zero: true, present: false })),
    ).toBe(true);
    expect(mapEntriesMergeable({ ...hole, length: 0 }, hole)).toBe(false);
  });
});
