// Counting references into the in-memory refcount table: qcow2_inc_refcounts_imrt(), plus the
// work budget that keeps a check on hostile metadata bounded in time (QEMU has none: an L1
// table whose four million entries all point at one L2 table makes it walk that table four
// million times).

import type { CheckContext } from './context.js';
import type { Imrt } from './imrt.js';
import { asInt64, hex } from './u64.js';
import { CheckAbort, type CheckCounts } from './types.js';

/**
 * qcow2_inc_refcounts_imrt(): count one reference to every cluster touched by
 * [offset, offset + size). `offset` is the u64 from the metadata (a bigint beyond 2^53).
 */
export function incRefcounts(
  ctx: CheckContext,
  res: CheckCounts,
  imrt: Imrt,
  offset: number | bigint,
  size: number,
): void {
  if (size <= 0) return;
  const cs = ctx.clusterSize;
  let first: number;
  let last: number;
  if (typeof offset === 'number') {
    // "Last cluster of qcow2 image may be semi-allocated, so it may be OK to reference some
    // space after file end but it should be less than one cluster."
    if (offset + size - ctx.fileLength >= cs) {
      exceedsEnd(ctx, res, hex(offset), size);
      return;
    }
    first = Math.floor(offset / cs);
    last = Math.floor((offset + size - 1) / cs);
  } else {
    // QEMU takes int64_t: values >= 2^63 are negative and pass the end-of-file test.
    const signed = asInt64(offset);
    if (signed + BigInt(size) - BigInt(ctx.fileLength) >= BigInt(cs)) {
      exceedsEnd(ctx, res, hex(offset), size);
      return;
    }
    // The cluster index is then astronomically large: QEMU's array cannot grow that far.
    res.checkErrors++;
    throw new CheckAbort('ENOMEM');
  }
  for (let k = first; k <= last; k++) {
    if (k >= imrt.size) {
      try {
        imrt.resize(k + 1);
      } catch (err) {
        res.checkErrors++;
        throw err;
      }
    }
    const refcount = imrt.get(k);
    if (refcount === imrt.max) {
      ctx.emit(`ERROR: overflow cluster offset=0x${hex(k * cs)}`);
      ctx.emit(
        'Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing',
      );
      res.corruptions++;
      continue;
    }
    imrt.set(k, refcount + 1);
  }
}

function exceedsEnd(ctx: CheckContext, res: CheckCounts, offsetHex: string, size: number): void {
  ctx.emit(
    `ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${offsetHex} size 0x${hex(size)}`,
  );
  res.corruptions++;
}

/**
 * Bounds the metadata a check walks. Tables beyond the end of the file read as zeros and cost
 * nothing (the walk skips them); what is limited is reading tables inside the file. A sane
 * image never comes near the limits: each L1 table references each L2 table once, and all the
 * tables read (snapshots re-read shared L2 tables) are a small multiple of the file. Hostile
 * images whose L1 tables point at the same L2 table millions of times, or whose snapshots share
 * huge L1 tables, stop here instead of running for hours (QEMU has no such limit).
 */
export class WorkBudget {
  #bytesLeft: number;
  /** L2 tables inside the file one L1 table may reference. */
  readonly maxTablesPerL1: number;

  constructor(fileLength: number, clusterSize: number) {
    this.#bytesLeft = Math.max(4 * 2 ** 30, 16 * fileLength);
    this.maxTablesPerL1 = Math.max(Math.ceil(fileLength / clusterSize) + 1, 4096);
  }

  /** Account for `bytes` of tables read. */
  spend(ctx: CheckContext, res: CheckCounts, bytes: number): void {
    this.#bytesLeft -= bytes;
    if (this.#bytesLeft < 0) this.abort(ctx, res);
  }

  abort(ctx: CheckContext, res: CheckCounts): never {
    ctx.emit(
      'ERROR: check aborted: the metadata references more tables than the image file can hold',
    );
    res.checkErrors++;
    throw new CheckAbort('EFBIG');
  }
}
