import { describe, expect, it } from 'vitest';
import { decodeHeader, encodeHeader, unsupportedFeatureMessage } from '../../src/qcow2/header.js';
import { CorruptImageError, NotSupportedError } from '../../src/core/errors.js';

/** A v3 header cluster as QEMU 7.2 writes it for a fresh 64 MiB image (first 512 bytes). */
function freshHeader(): Uint8Array {
  const h = new Uint8Array(65536);
  const v = new DataView(h.buffer);
  v.setUint32(0, 0x514649fb); // magic
  v.setUint32(4, 3); // version
  v.setUint32(20, 16); // cluster_bits
  v.setBigUint64(24, 64n << 20n); // size
  v.setUint32(36, 1); // l1_size
  v.setBigUint64(40, 0x30000n); // l1_table_offset
  v.setBigUint64(48, 0x10000n); // refcount_table_offset
  v.setUint32(56, 1); // refcount_table_clusters
  v.setUint32(96, 4); // refcount_order
  v.setUint32(100, 112); // header_length
  return h;
}

describe('qcow2 header codec', () => {
  it('decodes the fields and round-trips through encode (incl. feature table)', () => {
    const h = decodeHeader(freshHeader());
    expect(h).toMatchObject({
      version: 3,
      clusterBits: 16,
      size: 64 << 20,
      l1Size: 1,
      l1TableOffset: 0x30000,
      refcountOrder: 4,
      headerLength: 112,
    });
    const enc = encodeHeader(h);
    const again = decodeHeader(enc);
    expect(again.featureTable.map((f) => f.name)).toEqual([
      'dirty bit',
      'corrupt bit',
      'external data file',
      'compression type',
      'extended L2 entries',
      'lazy refcounts',
      'bitmaps',
      'raw external data',
    ]);
    expect(encodeHeader(again)).toEqual(enc);
  });

  it('keeps backing file, backing format, unknown extensions and unknown header fields', () => {
    const raw = freshHeader();
    const v = new DataView(raw.buffer);
    v.setUint32(100, 120); // 8 unknown bytes after the known header
    raw.set([1, 2, 3, 4, 5, 6, 7, 8], 112);
    let p = 120;
    v.setUint32(p, 0xe2792aca);
    v.setUint32(p + 4, 5);
    raw.set(Buffer.from('qcow2'), p + 8);
    p += 16;
    v.setUint32(p, 0x12345678);
    v.setUint32(p + 4, 3);
    raw.set([9, 9, 9], p + 8);
    p += 16;
    v.setUint32(p, 0);
    v.setUint32(p + 4, 0);
    p += 8;
    raw.set(Buffer.from('base.img'), p);
    v.setBigUint64(8, BigInt(p));
    v.setUint32(16, 8);
    const h = decodeHeader(raw);
    expect(h.backingFile).toBe('base.img');
    expect(h.backingFormat).toBe('qcow2');
    expect(h.unknownExtensions).toEqual([{ type: 0x12345678, data: new Uint8Array([9, 9, 9]) }]);
    expect([...h.unknownHeaderFields]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const back = decodeHeader(encodeHeader(h));
    expect(back.backingFile).toBe('base.img');
    expect(back.unknownExtensions).toEqual(h.unknownExtensions);
    expect([...back.unknownHeaderFields]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it.each([
    [
      'bad magic',
      (v: DataView) => v.setUint32(0, 0x12345678),
      'Image is not in qcow2 format',
      CorruptImageError,
    ],
    [
      'version 9',
      (v: DataView) => v.setUint32(4, 9),
      'Unsupported qcow2 version 9',
      NotSupportedError,
    ],
    [
      'cluster_bits 8',
      (v: DataView) => v.setUint32(20, 8),
      'Unsupported cluster size: 2^8',
      CorruptImageError,
    ],
    [
      'cluster_bits 22',
      (v: DataView) => v.setUint32(20, 22),
      'Unsupported cluster size: 2^22',
      CorruptImageError,
    ],
    [
      'short v3 header',
      (v: DataView) => v.setUint32(100, 100),
      'qcow2 header too short',
      CorruptImageError,
    ],
    [
      'refcount_order 7',
      (v: DataView) => v.setUint32(96, 7),
      'Reference count entry width too large; may not exceed 64 bits',
      CorruptImageError,
    ],
    [
      'backing offset beyond cluster',
      (v: DataView) => v.setBigUint64(8, 1n << 20n),
      'Invalid backing file offset',
      CorruptImageError,
    ],
    [
      'zstd without the incompatible bit',
      (v: DataView) => v.setUint8(104, 1),
      'qcow2: Compression type incompatible feature bit must be set',
      CorruptImageError,
    ],
    [
      'unknown compression type',
      (v: DataView) => v.setUint8(104, 7),
      'qcow2: unknown compression type: 7',
      NotSupportedError,
    ],
  ] as const)('refuses %s', (_name, patch, message, cls) => {
    const raw = freshHeader();
    patch(new DataView(raw.buffer));
    expect(() => decodeHeader(raw)).toThrow(cls);
    expect(() => decodeHeader(raw)).toThrow(message);
  });

  it('names unknown incompatible features from the feature table', () => {
    expect(
      unsupportedFeatureMessage([{ type: 0, bit: 5, name: 'shiny' }], (1n << 5n) | (1n << 9n)),
    ).toBe('Unsupported qcow2 feature(s): shiny, Unknown incompatible feature: 200');
    const raw = freshHeader();
    new DataView(raw.buffer).setBigUint64(72, 1n << 40n);
    expect(() => decodeHeader(raw)).toThrow(
      'Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000000',
    );
  });

  it('reports a truncated header by field', () => {
    expect(() => decodeHeader(freshHeader().subarray(0, 30))).toThrow(
      /truncated qcow2 header field size/,
    );
  });
});
