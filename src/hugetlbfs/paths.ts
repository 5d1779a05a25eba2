// Where the kernel publishes huge page state (Linux Documentation/admin-guide/mm/hugetlbpage.rst)
// and how page sizes are spelled there ("hugepages-2048kB") and in mount options ("2M").

import { InvalidArgumentError, parseSize } from '../core/index.js';

export const PROC_MEMINFO = '/proc/meminfo';
export const PROC_MOUNTS = '/proc/mounts';
export const PROC_FILESYSTEMS = '/proc/filesystems';
/** Per-size pools: hugepages-${size}kB/{nr_hugepages,free_hugepages,...} (hugetlbpage.rst). */
export const SYS_HUGEPAGES = '/sys/kernel/mm/hugepages';
/** Per-node pools: node<N>/hugepages/hugepages-${size}kB/{nr,free,surplus}_hugepages. */
export const SYS_NODES = '/sys/devices/system/node';

/** The sysfs directory name of a page size: 2 MiB -> "hugepages-2048kB". */
export function sizeDirName(pageSize: number): string {
  return `hugepages-${pageSize / 1024}kB`;
}

/** Inverse of sizeDirName; undefined for anything else in the directory. */
export function parseSizeDirName(name: string): number | undefined {
  const m = /^hugepages-(\d+)kB$/.exec(name);
  return m ? Number(m[1]) * 1024 : undefined;
}

/** Global pool directory of one size. */
export function poolDir(pageSize: number): string {
  return `${SYS_HUGEPAGES}/${sizeDirName(pageSize)}`;
}

/** Pool directory of one size on one NUMA node. */
export function nodePoolDir(node: number, pageSize: number): string {
  return `${SYS_NODES}/node${node}/hugepages/${sizeDirName(pageSize)}`;
}

/**
 * A size in the form mount options and QEMU accept, exact and short: 2097152 -> "2M",
 * 1073741824 -> "1G", 3145728 -> "3M", 1000 -> "1000".
 */
export function compactSize(bytes: number): string {
  const units: [string, number][] = [
    ['T', 2 ** 40],
    ['G', 2 ** 30],
    ['M', 2 ** 20],
    ['K', 2 ** 10],
  ];
  for (const [suffix, unit] of units) {
    if (bytes >= unit && bytes % unit === 0) return `${bytes / unit}${suffix}`;
  }
  return String(bytes);
}

/** Parse a page size given by the user ("2M", "1G", "2048K", "2097152"). */
export function parsePageSize(text: string): number {
  const value = parseSize(text, 'page size', { min: 4096 });
  if (!Number.isInteger(Math.log2(value))) {
    throw new InvalidArgumentError(`Invalid page size '${text}': not a power of two`, {
      code: 'VMF_INVALID_SIZE',
    });
  }
  return value;
}
