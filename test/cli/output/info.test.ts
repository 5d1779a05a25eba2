import { describe, expect, it } from 'vitest';
import {
  dumpQObject,
  formatInfoChainHuman,
  formatInfoChainJson,
  formatInfoHuman,
  formatInfoJson,
} from '../../../src/cli/output/info.js';
import type { ImageInfo, LuksInfo } from '../../../src/img/qapi-types.js';

// Expected texts are copied from qemu-img 7.2.22 output for the images described.

/** Keys deliberately out of QAPI order: the printer must not depend on them. */
const fresh: ImageInfo = {
  'format-specific': {
    type: 'qcow2',
    data: {
      'compression-type': 'zlib',
      'refcount-bits': 16,
      corrupt: false,
      'lazy-refcounts': false,
      'extended-l2': false,
      compat: '1.1',
    },
  },
  'dirty-flag': false,
  'cluster-size': 65536,
  'virtual-size': 67108864,
  'actual-size': 200704,
  format: 'qcow2',
  filename: 'a.qcow2',
};

describe('info JSON', () => {
  it('prints a fresh qcow2 as qemu-img', () => {
    expect(formatInfoJson(fresh)).toBe(`{
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
`);
  });

  it('prints a backing chain as an array, even of one image', () => {
    const raw: ImageInfo = {
      filename: 'base.raw',
      format: 'raw',
      'dirty-flag': false,
      'actual-size': 4096,
      'virtual-size': 1048576,
    };
    expect(formatInfoChainJson([raw])).toBe(`[
    {
        "virtual-size": 1048576,
        "filename": "base.raw",
        "format": "raw",
        "actual-size": 4096,
        "dirty-flag": false
    }
]
`);
  });

  it('places backing file keys as qemu-img does', () => {
    const text = formatInfoJson({
      ...fresh,
      'backing-filename': 'mid.qcow2',
      'full-backing-filename': 'chain dir/mid.qcow2',
      'backing-filename-format': 'qcow2',
    });
    const keys = [...text.matchAll(/^ {4}"([a-z-]+)"/gm)].map((m) => m[1]);
    expect(keys).toEqual([
      'backing-filename-format',
      'virtual-size',
      'filename',
      'cluster-size',
      'format',
      'actual-size',
      'format-specific',
      'full-backing-filename',
      'backing-filename',
      'dirty-flag',
    ]);
  });
});

describe('info human', () => {
  it('prints a v2 image with a snapshot', () => {
    const info: ImageInfo = {
      filename: 'v2.qcow2',
      format: 'qcow2',
      'dirty-flag': false,
      'actual-size': 348160,
      'virtual-size': 10485760,
      'cluster-size': 65536,
      snapshots: [
        {
          id: '1',
          name: 'v2snap',
          'vm-state-size': 0,
          'date-sec': 1795510209,
          'date-nsec': 0,
          'vm-clock-sec': 0,
          'vm-clock-nsec': 0,
          icount: 0,
        },
      ],
      'format-specific': {
        type: 'qcow2',
        data: { compat: '0.10', 'refcount-bits': 16, 'compression-type': 'zlib' },
      },
    };
    expect(formatInfoHuman(info, { timeZone: 'UTC' })).toBe(`image: v2.qcow2
file format: qcow2
virtual size: 10 MiB (10485760 bytes)
disk size: 340 KiB
cluster_size: 65536
Snapshot list:
ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT
1         v2snap                0 B 2026-11-24 08:50:09 00:00:00.000          0
Format specific information:
    compat: 0.10
    compression type: zlib
    refcount bits: 16
`);
  });

  it('prints bitmaps, in-use and disabled, as nested lists', () => {
    const info: ImageInfo = {
      ...fresh,
      filename: 'bitmaps-inuse.qcow2',
      'virtual-size': 16777216,
      'actual-size': 102400,
      'format-specific': {
        type: 'qcow2',
        data: {
          compat: '1.1',
          'lazy-refcounts': false,
          'refcount-bits': 16,
          corrupt: false,
          'extended-l2': false,
          bitmaps: [
            { name: 'bm0', granularity: 65536, flags: ['in-use', 'auto'] },
            { name: 'disabled', granularity: 65536, flags: ['in-use'] },
          ],
          'compression-type': 'zlib',
        },
      },
    };
    expect(formatInfoHuman(info)).toBe(`image: bitmaps-inuse.qcow2
file format: qcow2
virtual size: 16 MiB (16777216 bytes)
disk size: 100 KiB
cluster_size: 65536
Format specific information:
    compat: 1.1
    compression type: zlib
    lazy refcounts: false
    bitmaps:
        [0]:
            flags:
                [0]: in-use
                [1]: auto
            name: bm0
            granularity: 65536
        [1]:
            flags:
                [0]: in-use
            name: disabled
            granularity: 65536
    refcount bits: 16
    corrupt: false
    extended l2: false
`);
  });

  it('prints a luks image', () => {
    const slots = [
      { active: true, iters: 37236, stripes: 4000, 'key-offset': 4096 },
      ...[262144, 520192, 778240, 1036288, 1294336, 1552384, 1810432].map((o) => ({
        active: false,
        'key-offset': o,
      })),
    ];
    const luks: LuksInfo = {
      'cipher-alg': 'aes-256',
      'cipher-mode': 'xts',
      'ivgen-alg': 'plain64',
      'hash-alg': 'sha256',
      'payload-offset': 2068480,
      'master-key-iters': 9152,
      uuid: 'f33225e7-b592-4030-acca-a3ad8dd0ff27',
      slots,
    };
    const text = formatInfoHuman({
      filename: 'x.luks',
      format: 'luks',
      'dirty-flag': false,
      'actual-size': 262144,
      'virtual-size': 16777216,
      encrypted: true,
      'format-specific': { type: 'luks', data: luks },
    });
    expect(text).toBe(`image: x.luks
file format: luks
virtual size: 16 MiB (16777216 bytes)
disk size: 256 KiB
encrypted: yes
Format specific information:
    ivgen alg: plain64
    hash alg: sha256
    cipher alg: aes-256
    uuid: f33225e7-b592-4030-acca-a3ad8dd0ff27
    cipher mode: xts
    slots:
        [0]:
            active: true
            iters: 37236
            key offset: 4096
            stripes: 4000
${[262144, 520192, 778240, 1036288, 1294336, 1552384, 1810432]
  .map((o, i) => `        [${i + 1}]:\n            active: false\n            key offset: ${o}\n`)
  .join('')}    payload offset: 2068480
    master key iters: 9152
`);
  });

  it('prints backing files, dirty state and missing sizes (bdrv_image_info_dump)', () => {
    const base = { filename: 'top.qcow2', format: 'qcow2', 'virtual-size': 1024 };
    expect(
      formatInfoHuman({
        ...base,
        'dirty-flag': true,
        'backing-filename': 'b.qcow2',
        'full-backing-filename': 'dir/b.qcow2',
        'backing-filename-format': 'qcow2',
      }),
    ).toBe(
      'image: top.qcow2\nfile format: qcow2\nvirtual size: 1 KiB (1024 bytes)\n' +
        'disk size: unavailable\ncleanly shut down: no\n' +
        'backing file: b.qcow2 (actual path: dir/b.qcow2)\nbacking file format: qcow2\n',
    );
    expect(formatInfoHuman({ ...base, 'backing-filename': 'b' })).toContain(
      'backing file: b (cannot determine actual path)\n',
    );
    expect(
      formatInfoHuman({ ...base, 'backing-filename': '/b', 'full-backing-filename': '/b' }),
    ).toContain('backing file: /b\n');
  });

  it('separates the images of a chain with an empty line', () => {
    const a = { filename: 'a', format: 'raw', 'virtual-size': 0, 'actual-size': 0 };
    const one = 'image: a\nfile format: raw\nvirtual size: 0 B (0 bytes)\ndisk size: 0 B\n';
    expect(formatInfoChainHuman([a, a])).toBe(`${one}\n${one}`);
  });
});

describe('dumpQObject', () => {
  it('prints scalars bare and lists with indices', () => {
    expect(dumpQObject(1, { 'a-b': [1, [true]], c: 'x' })).toBe(
      '    a b:\n        [0]: 1\n        [1]:\n            [0]: true\n    c: x\n',
    );
  });
});
