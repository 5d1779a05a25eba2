// qemu-img resize as a library call (qemu-img.c img_resize): "[+|-]SIZE" relative to the
// current size (which QEMU counts in whole 512-byte sectors), shrinking only when asked,
// preallocation only when growing, then the format's truncate: qcow2_co_truncate for qcow2,
// file-posix's ftruncate / posix_fallocate / zero writes for raw.

import { truncateHostFile, type PreallocMode } from '../block/preallocate.js';
import { InvalidArgumentError, NotSupportedError, throwIfAborted } from '../core/index.js';
import { openImage, isQcow2, type SupportedFormat } from '../image/open.js';
import { MAX_L1_SIZE_BYTES } from '../qcow2/constants.js';
import { QemuOpts } from './qemu-opts.js';

export interface ResizeRequest {
  filename: string;
  /** The size argument as given: "SIZE", "+SIZE" or "-SIZE" (qemu_strtosz suffixes). */
  size: string;
  /** -f; probed when absent. */
  format?: SupportedFormat | undefined;
  /** --shrink: allow making the image smaller (data beyond the new end is lost). */
  shrink?: boolean;
  /** --preallocation (growing only). */
  preallocation?: PreallocMode | undefined;
  /** QEMU's warnings (a probed raw image opened read-write). */
  onWarning?: (message: string) => void;
  /** Checked before the image changes (a resize is one metadata update). */
  signal?: AbortSignal;
}

export interface ResizeResult {
  oldSize: number;
  newSize: number;
}

const SIZE_OPTS = [{ name: 'size', type: 'size' as const, help: 'Virtual disk size' }];

/** PreallocMode_lookup: the names `--preallocation` accepts. */
export function parsePreallocation(text: string): PreallocMode | undefined {
  return text === 'off' || text === 'metadata' || text === 'falloc' || text === 'full'
    ? text
    : undefined;
}

/** The relative sign and byte count of a size argument (QemuOpts size parsing and messages). */
export function parseResizeSize(text: string): { relative: -1 | 0 | 1; bytes: bigint } {
  let relative: -1 | 0 | 1 = 0;
  let rest = text;
  if (text.startsWith('+')) {
    relative = 1;
    rest = text.slice(1);
  } else if (text.startsWith('-')) {
    relative = -1;
    rest = text.slice(1);
  }
  const opts = new QemuOpts(SIZE_OPTS);
  opts.set('size', rest);
  // qemu_opt_get_size() returns a uint64_t that img_resize stores in an int64_t.
  return { relative, bytes: BigInt.asIntN(64, opts.get('size')!.value as bigint) };
}

/** `qemu-img resize`. Errors carry qemu-img's messages (and `details.warnings` to print after). */
export async function resizeImage(req: ResizeRequest): Promise<ResizeResult> {
  const { relative, bytes } = parseResizeSize(req.size);
  const prealloc = req.preallocation ?? 'off';
  const dev = await openImage(req.filename, {
    readOnly: false,
    ...(req.format ? { format: req.format } : {}),
    ...(req.onWarning ? { onWarning: req.onWarning } : {}),
  });
  try {
    // blk_getlength(): whole sectors, so a raw file of 1000 bytes counts as 1024.
    const current = isQcow2(dev) ? dev.size : Math.ceil(dev.size / 512) * 512;
    const total = relative ? BigInt(current) + bytes * BigInt(relative) : bytes;
    if (total <= 0n) throw new InvalidArgumentError('New image size must be positive');
    if (total <= BigInt(current) && prealloc !== 'off') {
      throw new InvalidArgumentError('Preallocation can only be used for growing images');
    }
    if (total < BigInt(current) && !req.shrink) {
      throw new InvalidArgumentError('Use the --shrink option to perform a shrink operation.', {
        code: 'VMF_RESIZE_SHRINK',
        details: {
          warnings: [
            "Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.",
          ],
        },
      });
    }
    if (total > BigInt(Number.MAX_SAFE_INTEGER)) {
      // qcow2 refuses such sizes when growing its L1 table, before anything else changes.
      if (isQcow2(dev) && total > BigInt(MAX_L1_SIZE_BYTES / 8) * BigInt(dev.layout.l2Coverage)) {
        throw new InvalidArgumentError('Failed to grow the L1 table: File too large');
      }
      throw new InvalidArgumentError(`Image size ${total} is too large (over 8 PiB)`);
    }
    const newSize = Number(total);
    throwIfAborted(req.signal);
    if (isQcow2(dev)) {
      await dev.truncate(newSize, { prealloc, allowShrink: true });
    } else if (dev.format === 'raw') {
      // raw-format over file-posix (handle_aiocb_truncate), always the exact size.
      if (prealloc === 'metadata') {
        throw new NotSupportedError('Unsupported preallocation mode: metadata');
      }
      await truncateHostFile(dev.storage, newSize, prealloc);
      await dev.storage.flush();
    } else {
      throw new NotSupportedError('Image format driver does not support resize');
    }
    return { oldSize: current, newSize };
  } finally {
    await dev.close();
  }
}
