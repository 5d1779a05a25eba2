// Shared by the copy-engine tests (test/img/convert-*.test.ts): a CopyPlan for one source
// copied to a raw target as convert would make it, and a raw file's data extents.
import type { BlockDevice } from '../../src/block/device.js';
import { openImage } from '../../src/image/open.js';
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
