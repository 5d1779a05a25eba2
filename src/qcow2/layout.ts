// Derived geometry of a qcow2 image (qcow2.rst "Cluster mapping", "Host cluster management"):
// everything that follows from cluster_bits, refcount_order and the extended-L2 bit.

import { InvalidArgumentError } from '../core/index.js';
import { SUBCLUSTERS_PER_CLUSTER } from './constants.js';

export interface Layout {
  readonly clusterBits: number;
  readonly clusterSize: number;
  readonly extendedL2: boolean;
  /** Bytes per L2 entry: 8, or 16 with extended L2. */
  readonly l2EntrySize: number;
  /** Entries per L2 table (one cluster). */
  readonly l2Entries: number;
  /** Guest bytes covered by one L2 table. */
  readonly l2Coverage: number;
  readonly subclusterSize: number;
  readonly subclustersPerCluster: number;
  readonly refcountOrder: number;
  readonly refcountBits: number;
  /** Refcount entries per refcount block. */
  readonly refblockEntries: number;
  /** Largest refcount value (2^bits - 1). */
  readonly refcountMax: bigint;
  /** Compressed descriptor: bit where the sector count starts (qcow2.rst: x = 62 - (cluster_bits - 8)). */
  readonly csizeShift: number;
  readonly csizeMask: number;
}

export function makeLayout(
  clusterBits: number,
  refcountOrder: number,
  extendedL2: boolean,
): Layout {
  const clusterSize = 2 ** clusterBits;
  const l2EntrySize = extendedL2 ? 16 : 8;
  const l2Entries = clusterSize / l2EntrySize;
  const refcountBits = 2 ** refcountOrder;
  const subclustersPerCluster = extendedL2 ? SUBCLUSTERS_PER_CLUSTER : 1;
  return {
    clusterBits,
    clusterSize,
    extendedL2,
    l2EntrySize,
    l2Entries,
    l2Coverage: l2Entries * clusterSize,
    subclusterSize: clusterSize / subclustersPerCluster,
    subclustersPerCluster,
    refcountOrder,
    refcountBits,
    refblockEntries: (clusterSize * 8) / refcountBits,
    refcountMax: (1n << BigInt(refcountBits)) - 1n,
    csizeShift: 62 - (clusterBits - 8),
    csizeMask: 2 ** (clusterBits - 8) - 1,
  };
}

/** Number of L1 entries needed for `size` guest bytes (QEMU size_to_l1). */
export function sizeToL1(layout: Layout, size: number): number {
  return Math.ceil(size / layout.l2Coverage);
}

export function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

export function alignDown(n: number, align: number): number {
  return Math.floor(n / align) * align;
}

/** Cluster sizes accepted by create (QEMU: a power of two between 512 and 2 MiB). */
export function validateClusterSize(size: number, extendedL2: boolean): number {
  if (
    !Number.isInteger(size) ||
    size < 512 ||
    size > 2 * 1024 * 1024 ||
    (size & (size - 1)) !== 0
  ) {
    throw new InvalidArgumentError('Cluster size must be a power of two between 512 and 2048k', {
      code: 'VMF_QCOW2_CLUSTER_SIZE',
    });
  }
  if (extendedL2 && size < 16384) {
    throw new InvalidArgumentError(
      'Extended L2 entries are only supported with cluster sizes of at least 16384 bytes',
      {
        code: 'VMF_QCOW2_CLUSTER_SIZE',
      },
    );
  }
  return Math.log2(size);
}
