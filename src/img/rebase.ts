// qemu-img rebase: give an overlay another backing file. Safe mode (default) keeps the guest
// view unchanged: wherever the overlay does not allocate and the old and new backing files
// differ, the old content is copied into the overlay first (img_rebase). Unsafe mode (-u) only
// rewrites the recorded name and format. `backingFile: ''` detaches the image.

import type { BlockDevice } from '../block/device.js';
import { InvalidArgumentError, throwIfAborted, withContext } from '../core/index.js';
import { isQcow2, openImage, openImageNoContext, type SupportedFormat } from '../image/open.js';
import { resolveRelativeTo } from '../qcow2/open.js';
import { chainOf, findBackingImage } from './chain.js';

export interface RebaseOptions {
  format?: SupportedFormat | undefined;
  /** -b: the new backing file ('' = none). */
  backingFile: string;
  /** -F: its format. */
  backingFormat?: string | undefined;
  /** -u: only change the recorded backing file name. */
  unsafe?: boolean;
  cache?: 'writeback' | 'unsafe' | 'writethrough';
  onProgress?: (percent: number) => void;
  signal?: AbortSignal;
}

const IO_BUF = 2 * 1024 * 1024;
const SECTOR = 512;

/** compare_buffers(): length of the leading run of sectors that differ (true) or match (false). */
function differingRun(
  a: Uint8Array,
  b: Uint8Array,
  bytes: number,
): { len: number; differs: boolean } {
  const eq = (from: number, len: number) => {
    for (let i = from; i < from + len; i++) if (a[i] !== b[i]) return false;
    return true;
  };
  let i = Math.min(bytes, SECTOR);
  const differs = !eq(0, i);
  while (i < bytes) {
    const len = Math.min(bytes - i, SECTOR);
    if (!eq(i, len) !== differs) break;
    i += len;
  }
  return { len: i, differs };
}

function refuseChange(name: string, detail: string): never {
  throw new InvalidArgumentError(`Could not change the backing file to '${name}': ${detail}`);
}

export async function rebaseImage(filename: string, o: RebaseOptions): Promise<void> {
  if (o.backingFormat !== undefined && o.backingFormat !== 'raw' && o.backingFormat !== 'qcow2') {
    throw new InvalidArgumentError(`Invalid format name: '${o.backingFormat}'`);
  }
  const top = await openImage(filename, {
    format: o.format,
    readOnly: false,
    ...(o.unsafe ? { backing: 'none' as const } : {}),
    ...(o.cache ? { cache: o.cache } : {}),
  });
  let newBacking: BlockDevice | undefined;
  let ownsNewBacking = false;
  try {
    if (!isQcow2(top)) refuseChange(o.backingFile, 'Operation not supported');
    if (!o.unsafe) {
      let prefixIndex = -1;
      if (o.backingFile !== '') {
        prefixIndex = await findBackingImage(top, o.backingFile);
        if (prefixIndex >= 0) {
          newBacking = chainOf(top)[prefixIndex];
        } else {
          const path = resolveRelativeTo(top.filename, o.backingFile);
          try {
            newBacking = await openImageNoContext(path, {
              ...(o.backingFormat ? { format: o.backingFormat as SupportedFormat } : {}),
              readOnly: true,
            });
          } catch (err) {
            throw withContext(err, `Could not open new backing file '${o.backingFile}'`);
          }
          ownsNewBacking = true;
        }
      }
      await copyDifferences(top, top.backing, newBacking, prefixIndex, o);
    }
    if (o.backingFile !== '' && o.backingFormat === undefined) {
      refuseChange(o.backingFile, 'backing format must be specified');
    }
    await top.setBackingFile(
      o.backingFile === '' ? undefined : o.backingFile,
      o.backingFile === '' ? undefined : o.backingFormat,
    );
    o.onProgress?.(100);
  } finally {
    if (ownsNewBacking) await newBacking?.close();
    await top.close();
  }
}

async function copyDifferences(
  top: BlockDevice,
  oldBacking: BlockDevice | undefined,
  newBacking: BlockDevice | undefined,
  prefixIndex: number,
  o: RebaseOptions,
): Promise<void> {
  const size = top.size;
  const oldSize = oldBacking?.size ?? 0;
  const newSize = newBacking?.size ?? 0;
  const bufOld = new Uint8Array(IO_BUF);
  const bufNew = new Uint8Array(IO_BUF);
  let n: number;
  for (let offset = 0; offset < size; offset += n) {
    throwIfAborted(o.signal);
    n = Math.min(IO_BUF, size - offset);
    // Allocated in the overlay itself: nothing to do.
    const [e] = await top.blockStatus(offset, n, { maxExtents: 1 }).catch((err: unknown) => {
      throw withContext(err, 'error while reading image metadata');
    });
    if (!e) break;
    n = e.length;
    if (e.allocated && e.depth === 0) continue;
    if (prefixIndex >= 0 && oldBacking && offset < oldSize) {
      // Rebasing onto an image further down the same chain: only what the images between the
      // old and the new backing file allocate can differ (relative depth < prefixIndex - 1).
      const [b] = await oldBacking.blockStatus(offset, Math.min(n, oldSize - offset), {
        maxExtents: 1,
      });
      if (b) {
        n = b.length;
        if (!(b.allocated && b.depth < prefixIndex - 1)) continue;
      }
    }
    let oldIsZero = false;
    if (offset >= oldSize) {
      bufOld.fill(0, 0, n);
      oldIsZero = true;
    } else {
      n = Math.min(n, oldSize - offset);
      await oldBacking!.read(bufOld.subarray(0, n), offset);
    }
    if (offset >= newSize || !newBacking) {
      bufNew.fill(0, 0, n);
    } else {
      n = Math.min(n, newSize - offset);
      await newBacking.read(bufNew.subarray(0, n), offset);
    }
    let written = 0;
    while (written < n) {
      const run = differingRun(bufOld.subarray(written), bufNew.subarray(written), n - written);
      if (run.differs) {
        if (oldIsZero) await top.writeZeroes(offset + written, run.len);
        else await top.write(bufOld.subarray(written, written + run.len), offset + written);
      }
      written += run.len;
    }
    o.onProgress?.((100 * (offset + n)) / size);
  }
}
