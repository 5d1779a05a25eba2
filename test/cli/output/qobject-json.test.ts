import { describe, expect, it } from 'vitest';
import { decodeByteString } from '../../../src/core/byte-string.js';
import {
  formatQNum,
  qdictOrder,
  qobjectToJson,
  qemuJson,
  quoteJsonString,
  tdbHash,
} from '../../../src/cli/output/qobject-json.js';

describe('tdbHash (qobject/qdict.c tdb_hash)', () => {
  // Values from the C function compiled with gcc.
  it.each([
    ['', 12345, 57],
    ['a', 155874025, 233],
    ['filename', 3232703801, 313],
    ['virtual-size', 2149220661, 309],
    ['format-specific', 3151754594, 354],
    ['data-file-raw', 4225633122, 354],
    ['children', 2084803790, 206],
    ['backing-filename-format', 3782586574, 206],
    ['snapshot-é', 4290747869, 477], // hashed over UTF-8 bytes
    ['abcdefghijklmnopqrstuvwxyz0123456789', 394575141, 293],
  ])('%j -> %i (bucket %i)', (key, hash, bucket) => {
    expect(tdbHash(key)).toBe(hash);
    expect(tdbHash(key) % 512).toBe(bucket);
  });
});

describe('qdictOrder', () => {
  it('reproduces qemu-img 7.2 info order for a fresh qcow2', () => {
    const qapi = ['filename', 'format', 'dirty-flag', 'actual-size', 'virtual-size'];
    const more = ['cluster-size', 'format-specific'];
    expect(qdictOrder([...qapi, ...more])).toEqual([
      'virtual-size',
      'filename',
      'cluster-size',
      'format',
      'actual-size',
      'format-specific',
      'dirty-flag',
    ]);
  });

  it('reproduces SnapshotInfo, ImageCheck and BlockMeasureInfo orders', () => {
    expect(
      qdictOrder([
        'id',
        'name',
        'vm-state-size',
        'date-sec',
        'date-nsec',
        'vm-clock-sec',
        'vm-clock-nsec',
        'icount',
      ]),
    ).toEqual([
      'icount',
      'vm-clock-nsec',
      'name',
      'date-sec',
      'date-nsec',
      'vm-clock-sec',
      'id',
      'vm-state-size',
    ]);
    expect(qdictOrder(['required', 'fully-allocated', 'bitmaps'])).toEqual([
      'bitmaps',
      'required',
      'fully-allocated',
    ]);
    expect(
      qdictOrder(['filename', 'format', 'check-errors', 'image-end-offset', 'total-clusters']),
    ).toEqual(['image-end-offset', 'total-clusters', 'check-errors', 'filename', 'format']);
  });

  it('puts the most recently inserted key of a bucket first', () => {
    // qemu-img 8.0 prints "children" (inserted last) before "backing-filename-format";
    // both hash to bucket 206.
    expect(qdictOrder(['backing-filename-format', 'children'])).toEqual([
      'children',
      'backing-filename-format',
    ]);
    expect(qdictOrder(['children', 'backing-filename-format'])).toEqual([
      'backing-filename-format',
      'children',
    ]);
    expect(qdictOrder(['format-specific', 'data-file-raw', 'format-specific'])).toEqual([
      'data-file-raw',
      'format-specific',
    ]);
  });
});

describe('qobjectToJson (json-writer.c)', () => {
  it('pretty-prints a fresh 64M qcow2 info exactly as qemu-img 7.2', () => {
    const info = {
      filename: 'a.qcow2',
      format: 'qcow2',
      'dirty-flag': false,
      'actual-size': 200704,
      'virtual-size': 67108864,
      'cluster-size': 65536,
      'format-specific': {
        type: 'qcow2',
        data: {
          compat: '1.1',
          'extended-l2': false,
          'lazy-refcounts': false,
          corrupt: false,
          'refcount-bits': 16,
          'compression-type': 'zlib',
        },
      },
    };
    expect(qemuJson(info)).toBe(
      `{
    "virtual-size": 67108864,
    "filename": "a.qcow2",
    "cluster-size": 65536,
    "format": "qcow2",
    "actual-size": 200704,
    "format-specific": {
        "type": "qcow2",
        "data": {
            "compat": "1.1",
            "compression-type": "zlib",
            "lazy-refcounts": false,
            "refcount-bits": 16,
            "corrupt": false,
            "extended-l2": false
        }
    },
    "dirty-flag": false
}
`,
    );
  });

  it('prints empty containers over two lines and arrays of objects', () => {
    // a disabled bitmap as qemu-img 7.2 prints it ("flags" hashes before "name")
    expect(qobjectToJson({ name: 'd', flags: [] })).toBe(
      '{\n    "flags": [\n    ],\n    "name": "d"\n}',
    );
    expect(qobjectToJson([])).toBe('[\n]');
    expect(qobjectToJson({})).toBe('{\n}');
    expect(qobjectToJson([{ a: 1 }, [true, null]])).toBe(
      '[\n    {\n        "a": 1\n    },\n    [\n        true,\n        null\n    ]\n]',
    );
    expect(qobjectToJson(42)).toBe('42');
  });

  it('has a compact form (json: filenames)', () => {
    // qemu-img info --image-opts driver=qcow2,file.filename=luks.qcow2,encrypt.key-secret=sec0
    const opts = {
      driver: 'qcow2',
      file: { driver: 'file', filename: 'luks.qcow2' },
      'encrypt.key-secret': 'sec0',
    };
    expect(`json:${qobjectToJson(opts, false)}`).toBe(
      'json:{"encrypt.key-secret": "sec0", "driver": "qcow2", "file": {"driver": "file", "filename": "luks.qcow2"}}',
    );
    expect(qobjectToJson({ a: [], b: {} }, false)).toBe('{"a": [], "b": {}}');
  });

  it('skips undefined members', () => {
    expect(qobjectToJson({ a: undefined, b: 1 }, false)).toBe('{"b": 1}');
  });
});

describe('quoteJsonString (quoted_str with mod_utf8_codepoint)', () => {
  const raw = (...bytes: number[]): string => decodeByteString(Uint8Array.from(bytes));
  it.each([
    ['plain', '"plain"'],
    ['a"b\\c/d', '"a\\"b\\\\c/d"'],
    ['\b\f\n\r\t', '"\\b\\f\\n\\r\\t"'],
    ['\u0001\u001f\u007f', '"\\u0001\\u001F\\u007F"'],
    ['é€', '"\\u00E9\\u20AC"'],
    ['😀', '"\\uD83D\\uDE00"'],
    // From qemu-img 7.2 info of a snapshot named with these bytes:
    [
      raw(0x61, 0xc0, 0x80, 0x62, 0xff, 0x63, 0xed, 0xa0, 0x80, 0x64, 0xf8, 0x88, 0x80, 0x80, 0x80),
      '"a\\u0000b\\uFFFDc\\uFFFDd\\uFFFD"',
    ],
    [raw(0x65, 0xef, 0xbf, 0xbe, 0x66, 0xc3), '"e\\uFFFDf\\uFFFD"'], // U+FFFE; cut "é"
    [raw(0xc3, 0x41), '"\\uFFFDA"'], // missing continuation: the next byte starts afresh
    [raw(0x80, 0xbf), '"\\uFFFD\\uFFFD"'], // stray continuation bytes, one each
    [raw(0xe0, 0x80, 0x80), '"\\uFFFD"'], // overlong 3-byte: one sequence
    ['ab\u0000cd', '"ab"'], // a C string ends at NUL
  ])('%j -> %s', (input, want) => {
    expect(quoteJsonString(input)).toBe(want);
  });
});

describe('formatQNum', () => {
  it.each([
    [0, '0'],
    [-0, '0'],
    [-12, '-12'],
    [1099511627776, '1099511627776'],
    [2 ** 64, '18446744073709551616'],
    [-(2n ** 63n), '-9223372036854775808'],
    // %.17g, checked against glibc
    [0.1, '0.10000000000000001'],
    [1 / 3, '0.33333333333333331'],
    [123456789.125, '123456789.125'],
    [1e-7, '9.9999999999999995e-08'],
    [(100 * 3) / 7, '42.857142857142854'],
  ])('%s -> %s', (v, want) => {
    expect(formatQNum(v)).toBe(want);
  });
});
