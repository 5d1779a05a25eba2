// Shared by the copy-engine tests (test/img/convert-*.test.ts): a CopyPlan for one source
// copied to a raw target as convert would make it, the open source and new target to run it
// on, and a raw file's data extents.
import type { BlockDevice } from '../../src/block/device.js';
import type { ReserveAheadOptions } from '../../src/block/reserve-ahead.js';
import { createImage } from '../../src/image/create.js';
import { isQcow2, openImage } from '../../src/image/open.js';
import type { CopyPlan } from '../../src/img/convert/copy.js';

const SECTOR = 512;

/** convert's plan for `source` -> a new raw `target`, with -S `minSparse` sectors. */
export function rawCopyPlan(source: BlockDevice, target: BlockDevice, minSparse = 8): CopyPlan {
  const sectors = Math.ceil(source.size / SECTOR);
  return {
    sources: [source],
    sourceSectors: [sectors],
    sourceAlignment: [1],
    target,
    totalSectors: sectors,
    minSparse,
    alignment: 2 ** Math.floor(Math.log2(minSparse)),
    bufSectors: (2 * 1024 * 1024) / SECTOR,
    targetHasBacking: false,
    targetBackingSectors: -1,
    hasZeroInit: true,
    compressed: false,
    clusterSectors: 0,
    workers: 4,
    inOrder: true,
    salvage: false,
    mapSources: true,
  };
}

/** Data extents of a raw file, as [offset, length] pairs (SEEK_DATA / SEEK_HOLE). */
export async function rawLayout(path: string): Promise<[number, number][]> {
  const dev = await openImage(path, { format: 'raw' });
  try {
    const out: [number, number][] = [];
    for (let off = 0; off < dev.size;) {
      const [e] = await dev.blockStatus(off, dev.size - off);
      if (e!.data) out.push([off, e!.length]);
      off += e!.length;
    }
    return out;
  } finally {
    await dev.close();
  }
}

/**
 * Open `src` as convert opens its sources, create a new raw `out` of its size and open it (with
 * space reserved ahead, if asked), run `copy` on the two, and close both.
 */
export async function withNewRawTarget<T>(
  src: string,
  format: 'raw' | 'qcow2',
  out: string,
  copy: (source: BlockDevice, target: BlockDevice) => Promise<T>,
  reserveAhead?: ReserveAheadOptions,
): Promise<T> {
  const source = await openImage(src, { format, readOnly: true, syncReadMax: 256 * 1024 });
  try {
    await createImage(out, { format: 'raw', size: source.size });
    const target = await openImage(out, {
      format: 'raw',
      readOnly: false,
      ...(reserveAhead ? { reserveAhead } : {}),
    });
    try {
      return await copy(source, target);
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

/**
 * As withNewRawTarget(), for a new qcow2 `out` (create options `create`: cluster size, extended
 * L2), opened as convert opens it (space reserved ahead from its end); `copy` gets the plan
 * convert would make for it (CopyPlan.freshTarget set: nothing in it is allocated).
 */
export async function withNewQcow2Target<T>(
  src: string,
  format: 'raw' | 'qcow2',
  out: string,
  create: { clusterSize?: number; extendedL2?: boolean },
  copy: (plan: CopyPlan, source: BlockDevice, target: BlockDevice) => Promise<T>,
  minSparse = 8,
): Promise<T> {
  const source = await openImage(src, { format, readOnly: true, syncReadMax: 256 * 1024 });
  try {
    await createImage(out, { format: 'qcow2', size: source.size, ...create });
    const target = await openImage(out, {
      format: 'qcow2',
      readOnly: false,
      syncWriteMax: Infinity,
      reserveAhead: { span: 1024 * 1024, maxSpan: 8 * 1024 * 1024 },
    });
    try {
      const clusterSize = create.clusterSize ?? 65536;
      const plan: CopyPlan = {
        ...rawCopyPlan(source, target, minSparse),
        sourceAlignment: [isQcow2(source) ? source.layout.clusterSize / SECTOR : 1],
        bufSectors: Math.max(2 * 1024 * 1024, clusterSize) / SECTOR,
        clusterSectors: clusterSize / SECTOR,
        freshTarget: true,
      };
      return await copy(plan, source, target);
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}
