import { describe, expect, it } from 'vitest';
import {
  decodeHugetlbfsMount,
  parseKernelSize,
  parseMeminfo,
  parseMounts,
} from '../../src/hugetlbfs/procfs.js';
import {
  compactSize,
  parsePageSize,
  parseSizeDirName,
  sizeDirName,
} from '../../src/hugetlbfs/paths.js';
import { InvalidArgumentError } from '../../src/core/index.js';

describe('/proc/meminfo', () => {
  it('reads the huge page lines in bytes where the file says kB', () => {
    const m = parseMeminfo(
      'MemTotal: 1024 kB\nMemAvailable: 512 kB\nHugePages_Total:      8\nHugePages_Free:        6\n' +
        'HugePages_Rsvd:        1\nHugePages_Surp:        2\nHugepagesize:       2048 kB\nHugetlb:   16384 kB\n',
    );
    expect(m).toEqual({
      total: 8,
      free: 6,
      reserved: 1,
      surplus: 2,
      defaultPageSize: 2 * 2 ** 20,
      hugetlbBytes: 16 * 2 ** 20,
      memTotal: 2 ** 20,
      memFree: undefined,
      memAvailable: 2 ** 19,
    });
  });

  it('is undefined without hugetlb support', () => {
    expect(parseMeminfo('MemTotal: 1024 kB\nAnonHugePages: 0 kB\n')).toBeUndefined();
  });
});

describe('/proc/mounts', () => {
  it('unescapes octal sequences in mount points', () => {
    const [e] = parseMounts('none /mnt/with\\040space hugetlbfs rw,pagesize=2M 0 0\n');
    expect(e).toEqual({
      source: 'none',
      mountPoint: '/mnt/with space',
      fsType: 'hugetlbfs',
      options: ['rw', 'pagesize=2M'],
    });
  });

  it('decodes the options the kernel prints, with its defaults for omitted ones', () => {
    const [full, bare] = parseMounts(
      'none /a hugetlbfs rw,relatime,uid=1000,gid=100,mode=1770,nr_inodes=10,pagesize=1024M,size=2147483648,min_size=1073741824 0 0\n' +
        'hugetlbfs /dev/hugepages hugetlbfs ro,relatime 0 0\n',
    );
    expect(decodeHugetlbfsMount(full!, 2 ** 21)).toMatchObject({
      pageSize: 2 ** 30,
      size: 2 ** 31,
      minSize: 2 ** 30,
      nrInodes: 10,
      uid: 1000,
      gid: 100,
      mode: 0o1770,
      readOnly: false,
    });
    // No pagesize= (old kernels): the default size; uid/gid 0 and mode 0755 are not printed.
    expect(decodeHugetlbfsMount(bare!, 2 ** 21)).toMatchObject({
      pageSize: 2 ** 21,
      size: undefined,
      minSize: undefined,
      nrInodes: undefined,
      uid: 0,
      gid: 0,
      mode: 0o755,
      readOnly: true,
    });
  });

  it('ignores other filesystems', () => {
    const [e] = parseMounts('tmpfs /tmp tmpfs rw 0 0');
    expect(decodeHugetlbfsMount(e!, 2 ** 21)).toBeUndefined();
  });

  it.each([
    ['2M', 2 ** 21],
    ['1024M', 2 ** 30],
    ['64K', 65536],
    ['1g', 2 ** 30],
    ['4096', 4096],
    ['x', undefined],
  ])('kernel size %s', (text, want) => expect(parseKernelSize(text)).toBe(want));
});

describe('page size names', () => {
  it('maps sizes to sysfs directory names and back', () => {
    expect(sizeDirName(2 ** 21)).toBe('hugepages-2048kB');
    expect(sizeDirName(2 ** 30)).toBe('hugepages-1048576kB');
    expect(parseSizeDirName('hugepages-1048576kB')).toBe(2 ** 30);
    expect(parseSizeDirName('demote')).toBeUndefined();
  });

  it.each([
    [2 ** 21, '2M'],
    [2 ** 30, '1G'],
    [3 * 2 ** 20, '3M'],
    [1536 * 2 ** 20, '1536M'],
    [1000, '1000'],
  ])('compactSize(%d) = %s', (n, s) => expect(compactSize(n)).toBe(s));

  it('parses page sizes and rejects non powers of two', () => {
    expect(parsePageSize('2M')).toBe(2 ** 21);
    expect(parsePageSize('1G')).toBe(2 ** 30);
    expect(parsePageSize('16G')).toBe(2 ** 34);
    expect(() => parsePageSize('3M')).toThrow(/not a power of two/);
    expect(() => parsePageSize('1k')).toThrow(InvalidArgumentError);
  });
});
