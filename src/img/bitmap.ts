// qemu-img bitmap as a library call (qemu-img.c img_bitmap): open the image read-write without
// its backing chain (its bitmaps load as QEMU loads them on open), run the actions in order,
// close (which stores the bitmaps). The first failing action stops the run; what the earlier
// ones did is still stored on close, as with qemu-img.

import type { BlockDevice } from '../block/device.js';
import { InvalidArgumentError, withContext } from '../core/index.js';
import { isQcow2, openImage, type SupportedFormat } from '../image/open.js';
import {
  generatedNodeName,
  persistentBitmaps,
  type PersistentBitmaps,
} from '../qcow2/bitmaps/index.js';
import type { DirtyBitmap } from '../qcow2/bitmaps/index.js';

export type BitmapAction =
  | { op: 'add' }
  | { op: 'remove' }
  | { op: 'clear' }
  | { op: 'enable' }
  | { op: 'disable' }
  /** Merge bitmap `source` (of the image, or of `sourceFile`) into the bitmap. */
  | { op: 'merge'; source: string };

export interface BitmapOptions {
  filename: string;
  /** The bitmap every action applies to. */
  bitmap: string;
  /** Run in this order. */
  actions: BitmapAction[];
  /** -f */
  format?: SupportedFormat | undefined;
  /** -g: granularity for --add in bytes; 0 or undefined = the default. */
  granularity?: number | undefined;
  /** -b / -F: the image holding the --merge source bitmaps (opened read-only). */
  sourceFile?: string | undefined;
  sourceFormat?: SupportedFormat | undefined;
  /** Warnings QEMU prints without failing (a probed raw image opened read-write). */
  onWarning?: (message: string) => void;
  /** Errors QEMU reports without failing the command (bitmaps lost while closing). */
  onCloseError?: (message: string) => void;
}

function fail(message: string): never {
  throw new InvalidArgumentError(message);
}

/** img_bitmap()'s checks before anything is opened, in its order and words. */
export function validateBitmapOptions(o: BitmapOptions): void {
  if (o.actions.length === 0) {
    fail('Need at least one of --add, --remove, --clear, --enable, --disable, or --merge');
  }
  if (o.granularity && !o.actions.some((a) => a.op === 'add')) {
    fail('granularity only supported with --add');
  }
  if (o.sourceFormat !== undefined && o.sourceFile === undefined) fail('-F only supported with -b');
  if (o.sourceFile !== undefined && !o.actions.some((a) => a.op === 'merge')) {
    fail('Merge bitmap source file only supported with --merge');
  }
}

/** The in-memory bitmaps of `dev` (loaded as on a QEMU open), or undefined for raw images. */
async function bitmapsOf(dev: BlockDevice): Promise<PersistentBitmaps | undefined> {
  if (!isQcow2(dev)) return undefined;
  const set = persistentBitmaps(dev);
  await set.loadAll();
  return set;
}

/** A node without bitmap support (raw): no bitmaps, and none can be made persistent. */
function unsupported(name: string, op: BitmapAction['op'], nodeName: string): never {
  if (op === 'add') {
    fail(`Can't store persistent bitmaps to ${nodeName}: Operation not supported`);
  }
  fail(`Dirty bitmap '${name}' not found`);
}

function lookupIn(set: PersistentBitmaps | undefined, name: string): DirtyBitmap {
  if (!set) fail(`Dirty bitmap '${name}' not found`);
  return set.lookup(name);
}

export async function bitmapImage(o: BitmapOptions): Promise<void> {
  validateBitmapOptions(o);
  // "No need to open backing chains; we will be manipulating bitmaps directly in this image."
  let dev: BlockDevice | undefined;
  let src: BlockDevice | undefined;
  try {
    dev = await openImage(o.filename, {
      format: o.format,
      readOnly: false,
      backing: 'none',
      ...(o.onWarning ? { onWarning: o.onWarning } : {}),
    });
    let bitmaps: PersistentBitmaps | undefined;
    try {
      bitmaps = await bitmapsOf(dev);
    } catch (err) {
      throw withContext(err, `Could not open '${o.filename}'`);
    }
    let srcBitmaps = bitmaps;
    if (o.sourceFile !== undefined) {
      src = await openImage(o.sourceFile, {
        format: o.sourceFormat,
        readOnly: true,
        backing: 'none',
      });
      try {
        srcBitmaps = await bitmapsOf(src);
      } catch (err) {
        throw withContext(err, `Could not open '${o.sourceFile}'`);
      }
    }
    const nodeName = bitmaps?.nodeName ?? generatedNodeName();
    for (const act of o.actions) {
      try {
        await runAction(act, o, bitmaps, srcBitmaps, nodeName);
      } catch (err) {
        throw withContext(err, `Operation ${act.op} on bitmap ${o.bitmap} failed`);
      }
    }
  } finally {
    await src?.close().catch(() => undefined);
    if (dev) {
      // qemu-img reports bitmaps it could not store while closing, and still exits 0.
      await dev.close().catch((err: unknown) => {
        o.onCloseError?.(err instanceof Error ? err.message : String(err));
      });
    }
  }
}

async function runAction(
  act: BitmapAction,
  o: BitmapOptions,
  bitmaps: PersistentBitmaps | undefined,
  srcBitmaps: PersistentBitmaps | undefined,
  nodeName: string,
): Promise<void> {
  const name = o.bitmap;
  if (!bitmaps) unsupported(name, act.op, nodeName);
  switch (act.op) {
    case 'add':
      await bitmaps.add(name, {
        // has_granularity is !!granularity; the QMP argument is a uint32.
        granularity: o.granularity ? o.granularity % 2 ** 32 : undefined,
      });
      return;
    case 'remove':
      await bitmaps.remove(name);
      return;
    case 'clear':
      await bitmaps.clear(name);
      return;
    case 'enable':
    case 'disable':
      await bitmaps.setEnabled(name, act.op === 'enable');
      return;
    case 'merge': {
      bitmaps.lookup(name); // the target is looked up first
      await bitmaps.merge(name, lookupIn(srcBitmaps, act.source));
      return;
    }
  }
}
