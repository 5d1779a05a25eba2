// qemu-img compare as a library call (qemu-img.c img_compare): walk both images by block status,
// skip ranges that read as zeros in both, read and compare the rest, then check that the part
// of the longer image beyond the shorter one is all zeros. The answer and the offset it reports
// are QEMU's: the first differing (or non-zero) 512-byte sector of the chunk where the difference
// is, and in strict mode the first offset whose BDRV_BLOCK_* status words differ.
//
// Unlike QEMU, reads are issued ahead (a few chunks, both images at once) while earlier chunks
// are compared; results are still taken strictly in order, so what is reported is unchanged.

import type { BlockDevice } from '../block/device.js';
import { AbortError, VmforgeError, throwIfAborted } from '../core/index.js';
import {
  BDRV_BLOCK_ALLOCATED,
  BDRV_BLOCK_ZERO,
  blockStatusAbove,
  qemuLength,
  readQemu,
  SECTOR,
} from './qemu-block-status.js';

/** qemu-img.c IO_BUF_SIZE: the largest chunk read at once. */
export const COMPARE_CHUNK = 2 * 1024 * 1024;

export interface CompareProgress {
  /** Bytes just accounted for (one chunk). */
  bytes: number;
  /** Bytes accounted for so far. */
  done: number;
  /** The longer image's length (what 100% means). */
  total: number;
}

export interface CompareOptions {
  /** -s: differing sizes or allocation status (not only content) make the images differ. */
  strict?: boolean;
  signal?: AbortSignal;
  /** Called after each chunk, in order. */
  onProgress?: (progress: CompareProgress) => void;
  /**
   * Called when the common part is done and the sizes differ, before the rest of the longer
   * image is checked (qemu-img prints "Warning: Image size mismatch!" then).
   */
  onSizeMismatch?: () => void;
  /** How many chunks may be read ahead of the one being compared. @default 4 */
  readAhead?: number;
}

export type CompareResult =
  /** "Images are identical." (after "Warning: Image size mismatch!" when `sizeWarning`). */
  | { status: 'identical'; sizeWarning: boolean }
  /** "Content mismatch at offset N!" (after the size warning when `sizeWarning`). */
  | { status: 'content-mismatch'; offset: number; sizeWarning: boolean }
  /** Strict mode: "Strict mode: Image size mismatch!" */
  | { status: 'size-mismatch' }
  /** Strict mode: "Strict mode: Offset N block status mismatch!" */
  | { status: 'block-status-mismatch'; offset: number };

/**
 * Block status or a read failed. qemu-img exits 3 ("Sector allocation test failed for X") or 4
 * ("Error while reading offset N of X: <strerror>"). `image` is 1 or 2; `sizeWarning` says
 * whether the size-mismatch warning came before the failure.
 */
export class CompareError extends VmforgeError {
  override name = 'CompareError';
  readonly stage: 'block-status' | 'read';
  readonly image: 1 | 2;
  readonly filename: string;
  readonly offset: number;
  /** The size-mismatch warning was due before the failure (qemu-img printed it). */
  sizeWarning = false;
  constructor(
    stage: 'block-status' | 'read',
    image: 1 | 2,
    offset: number,
    filename: string,
    cause: unknown,
  ) {
    const message =
      stage === 'block-status'
        ? `Sector allocation test failed for ${filename}`
        : `Error while reading offset ${offset} of ${filename}`;
    super('data', stage === 'read' ? 'VMF_COMPARE_READ' : 'VMF_COMPARE_STATUS', message, {
      cause,
    });
    this.stage = stage;
    this.image = image;
    this.filename = filename;
    this.offset = offset;
  }
}

/** One unit of work, planned from block status alone. */
type Step =
  | { kind: 'skip'; offset: number; length: number }
  | { kind: 'both'; offset: number; length: number }
  | { kind: 'one'; offset: number; length: number; image: 1 | 2 }
  | { kind: 'status-mismatch'; offset: number }
  | { kind: 'size-warning' }
  | { kind: 'failed'; error: unknown };

const ZEROS = new Uint8Array(64 * 1024);

/** Index of the first 512-byte sector (from the buffer start) where `a` and `b` differ, or -1. */
export function firstDifferentSector(a: Uint8Array, b: Uint8Array): number {
  const n = a.length;
  const ba = Buffer.from(a.buffer, a.byteOffset, n);
  const bb = Buffer.from(b.buffer, b.byteOffset, n);
  if (ba.equals(bb)) return -1;
  // Narrow by 64 KiB blocks, then by sectors: each test is one memcmp.
  for (let blk = 0; blk < n; blk += ZEROS.length) {
    const end = Math.min(n, blk + ZEROS.length);
    if (ba.subarray(blk, end).equals(bb.subarray(blk, end))) continue;
    for (let s = blk; s < end; s += SECTOR) {
      const e = Math.min(end, s + SECTOR);
      if (!ba.subarray(s, e).equals(bb.subarray(s, e))) return s;
    }
  }
  return -1;
}

/** find_nonzero(): index of the first sector holding a non-zero byte, or -1. */
export function firstNonZeroSector(a: Uint8Array): number {
  const buf = Buffer.from(a.buffer, a.byteOffset, a.length);
  const zeros = Buffer.from(ZEROS.buffer);
  for (let blk = 0; blk < buf.length; blk += ZEROS.length) {
    const end = Math.min(buf.length, blk + ZEROS.length);
    if (buf.subarray(blk, end).equals(zeros.subarray(0, end - blk))) continue;
    for (let s = blk; s < end; s += SECTOR) {
      const e = Math.min(end, s + SECTOR);
      if (!buf.subarray(s, e).equals(zeros.subarray(0, e - s))) return s;
    }
  }
  return -1;
}

/**
 * Compare two open images as `qemu-img compare [-s]` does. Returns the verdict; throws
 * CompareError when block status or a read fails (and AbortError when `signal` fires).
 */
export async function compareImages(
  dev1: BlockDevice,
  dev2: BlockDevice,
  options: CompareOptions = {},
): Promise<CompareResult> {
  const len1 = qemuLength(dev1);
  const len2 = qemuLength(dev2);
  const strict = options.strict ?? false;
  if (strict && len1 !== len2) return { status: 'size-mismatch' };
  const dev = (image: 1 | 2): BlockDevice => (image === 1 ? dev1 : dev2);
  const total = Math.max(len1, len2);
  const common = Math.min(len1, len2);
  let sizeWarning = false;
  let done = 0;

  // Plan steps from block status, in order (QEMU's loop without the reads).
  async function* plan(): AsyncGenerator<Step> {
    let offset = 0;
    let image: 1 | 2 = 1;
    try {
      while (offset < common) {
        image = 1;
        const s1 = await blockStatusAbove(dev1, offset, len1 - offset, len1);
        image = 2;
        const s2 = await blockStatusAbove(dev2, offset, len2 - offset, len2);
        let chunk = Math.min(s1.pnum, s2.pnum);
        if (strict && s1.flags !== s2.flags) {
          yield { kind: 'status-mismatch', offset };
          return;
        }
        const a1 = (s1.flags & BDRV_BLOCK_ALLOCATED) !== 0;
        const a2 = (s2.flags & BDRV_BLOCK_ALLOCATED) !== 0;
        if (s1.flags & s2.flags & BDRV_BLOCK_ZERO) {
          yield { kind: 'skip', offset, length: chunk };
        } else if (a1 === a2) {
          if (a1) {
            chunk = Math.min(chunk, COMPARE_CHUNK);
            yield { kind: 'both', offset, length: chunk };
          } else {
            yield { kind: 'skip', offset, length: chunk };
          }
        } else {
          chunk = Math.min(chunk, COMPARE_CHUNK);
          yield { kind: 'one', offset, length: chunk, image: a1 ? 1 : 2 };
        }
        offset += chunk;
      }
      if (len1 !== len2) {
        yield { kind: 'size-warning' };
        image = len1 > len2 ? 1 : 2;
        const over = dev(image);
        while (offset < total) {
          const st = await blockStatusAbove(over, offset, total - offset, total);
          let chunk = st.pnum;
          if (st.flags & BDRV_BLOCK_ALLOCATED && !(st.flags & BDRV_BLOCK_ZERO)) {
            chunk = Math.min(chunk, COMPARE_CHUNK);
            yield { kind: 'one', offset, length: chunk, image };
          } else {
            yield { kind: 'skip', offset, length: chunk };
          }
          offset += chunk;
        }
      }
    } catch (err) {
      if (err instanceof AbortError) throw err;
      yield {
        kind: 'failed',
        error: new CompareError('block-status', image, offset, dev(image).filename, err),
      };
    }
  }

  // Chunk buffers are recycled: allocating (and zero-filling) 2 MiB per read costs more than
  // reading it from the page cache. (Plain ArrayBuffers, which measured faster to read into
  // than Buffer.allocUnsafeSlow memory.)
  const pool: Uint8Array[] = [];
  const take = (length: number): Uint8Array =>
    length === COMPARE_CHUNK
      ? (pool.pop() ?? new Uint8Array(COMPARE_CHUNK))
      : new Uint8Array(length);
  const give = (bufs: readonly Uint8Array[]): void => {
    for (const b of bufs) if (b.length === COMPARE_CHUNK) pool.push(b);
  };
  const read = async (image: 1 | 2, offset: number, length: number): Promise<Uint8Array> => {
    const buf = take(length);
    try {
      await readQemu(dev(image), buf, offset);
    } catch (err) {
      give([buf]);
      throw new CompareError('read', image, offset, dev(image).filename, err);
    }
    return buf;
  };

  interface Pending {
    step: Step;
    data?: Promise<Uint8Array[]>;
  }
  const start = (step: Step): Pending => {
    if (step.kind === 'both') {
      return {
        step,
        data: Promise.all([read(1, step.offset, step.length), read(2, step.offset, step.length)]),
      };
    }
    if (step.kind === 'one') {
      return { step, data: read(step.image, step.offset, step.length).then((b) => [b]) };
    }
    return { step };
  };

  const window = Math.max(1, options.readAhead ?? 4);
  const queue: Pending[] = [];
  const steps = plan();
  let exhausted = false;
  const fill = async (): Promise<void> => {
    while (!exhausted && queue.length < window) {
      const next = await steps.next();
      if (next.done) {
        exhausted = true;
        return;
      }
      const p = start(next.value);
      // A read that fails while still queued is reported when its turn comes.
      p.data?.catch(() => undefined);
      queue.push(p);
      // Control steps end look-ahead so nothing is read past them needlessly.
      if (next.value.kind !== 'both' && next.value.kind !== 'one' && next.value.kind !== 'skip') {
        return;
      }
    }
  };

  const progress = (bytes: number): void => {
    done += bytes;
    options.onProgress?.({ bytes, done, total });
  };

  try {
    for (;;) {
      throwIfAborted(options.signal);
      await fill();
      const p = queue.shift();
      if (!p) break;
      const step = p.step;
      switch (step.kind) {
        case 'failed':
          throw withWarning(step.error, sizeWarning);
        case 'status-mismatch':
          return { status: 'block-status-mismatch', offset: step.offset };
        case 'size-warning':
          sizeWarning = true;
          options.onSizeMismatch?.();
          continue;
        case 'skip':
          progress(step.length);
          continue;
        case 'both': {
          let bufs: Uint8Array[];
          try {
            bufs = await p.data!;
          } catch (err) {
            throw withWarning(err, sizeWarning);
          }
          const at = firstDifferentSector(bufs[0]!, bufs[1]!);
          give(bufs);
          if (at >= 0) return { status: 'content-mismatch', offset: step.offset + at, sizeWarning };
          progress(step.length);
          continue;
        }
        case 'one': {
          let bufs: Uint8Array[];
          try {
            bufs = await p.data!;
          } catch (err) {
            throw withWarning(err, sizeWarning);
          }
          const at = firstNonZeroSector(bufs[0]!);
          give(bufs);
          if (at >= 0) return { status: 'content-mismatch', offset: step.offset + at, sizeWarning };
          progress(step.length);
          continue;
        }
      }
    }
  } finally {
    await steps.return(undefined);
  }
  return { status: 'identical', sizeWarning };
}

function withWarning(err: unknown, sizeWarning: boolean): unknown {
  if (err instanceof CompareError) err.sizeWarning = sizeWarning;
  return err;
}
