// QEMU's view of an image for the qemu-img operations that walk allocation (compare, measure,
// dd): the length QEMU gives it (bdrv_getlength, whole 512-byte sectors) and the BDRV_BLOCK_*
// flags bdrv_block_status_above(bs, NULL, ...) returns (block/io.c
// bdrv_co_common_block_status_above). The engine's BlockDevice.blockStatus answers the same
// questions in map terms; this module turns one answer into the exact flag word, because
// `compare -s` compares flag words, EOF bit included.

import type { BlockDevice, BlockExtent } from '../block/device.js';

export const BDRV_BLOCK_DATA = 0x01;
export const BDRV_BLOCK_ZERO = 0x02;
export const BDRV_BLOCK_OFFSET_VALID = 0x04;
export const BDRV_BLOCK_ALLOCATED = 0x10;
export const BDRV_BLOCK_EOF = 0x20;

export const SECTOR = 512;
/** qcow2_co_block_status() asks for at most INT_MAX bytes at a time. */
const QCOW2_MAX_STATUS_BYTES = 0x7fff_ffff;

/**
 * bdrv_getlength(): QEMU keeps lengths in whole sectors. A raw file's partial last sector
 * counts (refresh_total_sectors rounds up; it reads as zeros); a qcow2 header size is cut to
 * whole sectors (qcow2_do_open: total_sectors = size / 512).
 */
export function qemuLength(dev: BlockDevice): number {
  if (dev.format === 'raw') return Math.ceil(dev.size / SECTOR) * SECTOR;
  return Math.floor(dev.size / SECTOR) * SECTOR;
}

export interface QemuBlockStatus {
  /** BDRV_BLOCK_* flags (DATA, ZERO, OFFSET_VALID, ALLOCATED, EOF). */
  flags: number;
  /** Bytes from the offset that share the status (> 0). */
  pnum: number;
}

/**
 * QEMU's block-status cache (block/io.c bdrv_bsc_is_data): the last data extent a protocol
 * node reported, so walking a large data file costs one lseek pair instead of one per chunk.
 * Answers from it are what a fresh query would give while the file does not change, which is
 * the case for the read-only walks of compare, measure and dd.
 */
const dataCache = new WeakMap<BlockDevice, { start: number; end: number }>();

function cachedData(dev: BlockDevice, offset: number): number {
  const c = dataCache.get(dev);
  return c && offset >= c.start && offset < c.end ? c.end - offset : 0;
}

/** The device `depth` levels down the backing chain. */
function chainLayer(dev: BlockDevice, depth: number): BlockDevice | undefined {
  let layer: BlockDevice | undefined = dev;
  for (let i = 0; i < depth && layer; i++) layer = layer.backing;
  return layer;
}

function flagsOf(e: BlockExtent): number {
  let flags = 0;
  if (e.data) flags |= BDRV_BLOCK_DATA;
  if (e.zero) flags |= BDRV_BLOCK_ZERO;
  if (e.hostOffset !== undefined) flags |= BDRV_BLOCK_OFFSET_VALID;
  if (e.allocated) flags |= BDRV_BLOCK_ALLOCATED;
  return flags;
}

/**
 * bdrv_block_status_above(dev, NULL, offset, bytes): the status of guest bytes from `offset`
 * through the whole backing chain. `offset` must be below qemuLength(dev).
 */
export async function blockStatusAbove(
  dev: BlockDevice,
  offset: number,
  bytes: number,
  length = qemuLength(dev),
): Promise<QemuBlockStatus> {
  bytes = Math.min(bytes, length - offset);
  let flags: number;
  let pnum: number;
  const cached = dev.format === 'raw' ? cachedData(dev, offset) : 0;
  if (offset >= dev.size) {
    // The partial last sector of a raw file: file-posix reports a trailing hole.
    flags = BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_ALLOCATED;
    pnum = bytes;
  } else if (cached > 0) {
    flags = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_ALLOCATED;
    pnum = Math.min(cached, bytes);
  } else {
    let ask = Math.min(bytes, dev.size - offset);
    if (dev.format === 'qcow2') ask = Math.min(ask, QCOW2_MAX_STATUS_BYTES);
    const [e] = await dev.blockStatus(offset, ask, { maxExtents: 1 });
    if (!e || e.length <= 0) throw new Error(`internal error: no block status at ${offset}`);
    flags = flagsOf(e);
    pnum = e.length;
    if (dev.format === 'raw' && e.data && !e.zero) {
      dataCache.set(dev, { start: offset, end: offset + e.length });
    }
    if (!e.allocated) {
      // Unallocated down to the layer `depth`. If that layer has a backing file shorter than
      // the offset, QEMU's chain walk finds the backing file at EOF and answers
      // ZERO | ALLOCATED ("zeroes synthesized beyond EOF behave as if allocated").
      const layer = chainLayer(dev, e.depth);
      if (layer?.backing && offset >= layer.backing.size) {
        flags = BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
      }
    }
  }
  if (offset + pnum === length) flags |= BDRV_BLOCK_EOF;
  return { flags, pnum };
}

/**
 * Read guest bytes like blk_pread() on a device whose QEMU length may run past its size (the
 * partial last sector of a raw file reads as zeros).
 */
export async function readQemu(dev: BlockDevice, buf: Uint8Array, offset: number): Promise<void> {
  const inside = Math.max(0, Math.min(buf.length, dev.size - offset));
  if (inside > 0) await dev.read(inside === buf.length ? buf : buf.subarray(0, inside), offset);
  if (inside < buf.length) buf.fill(0, inside);
}
