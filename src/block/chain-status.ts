// Allocation status down a backing chain, as QEMU computes it for `qemu-img map` and NBD
// base:allocation: a format layer answers for its own clusters; ranges it does not allocate are
// asked of the backing image (depth + 1); beyond the backing image's end, or with no backing
// image, unallocated ranges read as zeros and are not "present" (block/io.c
// bdrv_co_block_status: "if !cow_bs || offset >= cow length: ret |= BDRV_BLOCK_ZERO").

import type { BlockDevice, BlockExtent } from './device.js';

/** One layer's own answer for a range (QEMU's BDRV_BLOCK_DATA / _ZERO / _OFFSET_VALID). */
export interface LayerExtent {
  offset: number;
  length: number;
  data: boolean;
  zero: boolean;
  hostOffset?: number;
  file?: string;
  compressed?: boolean;
}

/**
 * Resolve `layer` extents (this image's own status) through the backing chain.
 * Extents with neither data nor zero are "not allocated here".
 */
export async function composeChainStatus(
  layer: LayerExtent[],
  backing: BlockDevice | undefined,
  maxExtents = Infinity,
): Promise<BlockExtent[]> {
  const out: BlockExtent[] = [];
  for (const e of layer) {
    if (out.length >= maxExtents) break;
    if (e.data || e.zero) {
      out.push({ ...e, allocated: true, depth: 0 });
      continue;
    }
    // Not allocated in this layer.
    if (backing && e.offset < backing.size) {
      let pos = e.offset;
      const end = Math.min(e.offset + e.length, backing.size);
      while (pos < end && out.length < maxExtents) {
        const sub = await backing.blockStatus(pos, end - pos, {
          maxExtents: maxExtents - out.length,
        });
        if (sub.length === 0) break;
        for (const s of sub) {
          out.push({ ...s, depth: s.depth + 1 });
          pos = s.offset + s.length;
        }
      }
      if (pos < e.offset + e.length && out.length < maxExtents && pos >= backing.size) {
        out.push(unallocatedZero(pos, e.offset + e.length - pos, e));
      }
      // A partially answered range stops here; callers loop from the last extent's end.
      if (pos < end) break;
      continue;
    }
    out.push(unallocatedZero(e.offset, e.length, e));
  }
  return out;
}

function unallocatedZero(offset: number, length: number, e: LayerExtent): BlockExtent {
  const base = { offset, length, allocated: false, data: false, zero: true, depth: 0 };
  // An allocated-but-unused subcluster keeps its host offset (qemu-img map shows it).
  if (e.hostOffset !== undefined) {
    return {
      ...base,
      hostOffset: e.hostOffset + (offset - e.offset),
      ...(e.file ? { file: e.file } : {}),
    };
  }
  return base;
}
