// qemu-img snapshot as library calls (qemu-img.c img_snapshot over block/snapshot.c): open the
// image the way qemu-img does (read-write except for listing, backing chain included), run one
// action, and fail with qemu-img's wording. Raw images have no snapshots: creating says
// "Operation not supported", applying "Block driver does not support snapshots", deleting
// "snapshot not found" and listing shows nothing, as with qemu-img.

import type { BlockDevice } from '../block/device.js';
import {
  NotSupportedError,
  VmforgeError,
  InvalidArgumentError,
  throwIfAborted,
} from '../core/index.js';
import { openImage, isQcow2, type SupportedFormat } from '../image/open.js';
import { findSnapshotIndex, errnoOf } from '../qcow2/snapshots.js';
import { hasFeature } from '../qcow2/header.js';
import { describeImage } from './info.js';
import type { SnapshotInfo } from './qapi-types.js';

export interface ImageSnapshotOptions {
  /** Opening raw images by probing: QEMU's warning, like every read-write open. */
  onWarning?: (message: string) => void;
  /** Wall clock in microseconds since the epoch (g_get_real_time); default: now. */
  nowMicros?: () => number;
  /** Format to open with; qemu-img snapshot always probes (it has no -f). */
  format?: SupportedFormat;
  /** Checked before the image is opened (each action is one short metadata update). */
  signal?: AbortSignal;
}

/** Linux errno numbers for the "%d (%s)" of "Could not create snapshot". */
const ERRNO: Record<string, [number, string]> = {
  EPERM: [1, 'Operation not permitted'],
  ENOENT: [2, 'No such file or directory'],
  EIO: [5, 'Input/output error'],
  ENOMEM: [12, 'Cannot allocate memory'],
  EACCES: [13, 'Permission denied'],
  EBUSY: [16, 'Device or resource busy'],
  EINVAL: [22, 'Invalid argument'],
  EFBIG: [27, 'File too large'],
  ENOSPC: [28, 'No space left on device'],
  EROFS: [30, 'Read-only file system'],
  ENOTSUP: [95, 'Operation not supported'],
};

function errnoText(errno: string): [number, string] {
  return ERRNO[errno] ?? ERRNO['EIO']!;
}

function realTimeMicros(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}

async function openForSnapshot(
  filename: string,
  readOnly: boolean,
  options: ImageSnapshotOptions,
): Promise<BlockDevice> {
  throwIfAborted(options.signal);
  return openImage(filename, {
    readOnly,
    ...(options.format ? { format: options.format } : {}),
    ...(options.onWarning ? { onWarning: options.onWarning } : {}),
  });
}

/** Re-throw `err` under qemu-img's prefix, keeping its class, errno and preface lines. */
function withPrefix(err: unknown, prefix: string): never {
  if (err instanceof VmforgeError) {
    err.message = `${prefix}${err.message}`;
    throw err;
  }
  throw err;
}

/** `qemu-img snapshot -c NAME`: date from the wall clock, VM clock 0, icount 0, no VM state. */
export async function createImageSnapshot(
  filename: string,
  name: string,
  options: ImageSnapshotOptions = {},
): Promise<void> {
  const dev = await openForSnapshot(filename, false, options);
  try {
    const fail = (errno: string, cause?: unknown): never => {
      const [n, text] = errnoText(errno);
      throw new NotSupportedError(`Could not create snapshot '${name}': ${-n} (${text})`, {
        cause,
        details: { errno },
      });
    };
    if (!isQcow2(dev)) fail('ENOTSUP');
    else {
      const rt = (options.nowMicros ?? realTimeMicros)();
      try {
        await dev.createSnapshot({
          name,
          dateSec: Math.floor(rt / 1_000_000),
          dateNsec: (rt % 1_000_000) * 1000,
        });
      } catch (err) {
        fail(errnoOf(err), err);
      }
    }
  } finally {
    await dev.close();
  }
}

/** `qemu-img snapshot -a NAME` (NAME is an id or a name). */
export async function applyImageSnapshot(
  filename: string,
  name: string,
  options: ImageSnapshotOptions = {},
): Promise<void> {
  const warnings: string[] = [];
  const dev = await openForSnapshot(filename, false, {
    ...options,
    onWarning: (m) => {
      warnings.push(m);
      options.onWarning?.(m);
    },
  });
  try {
    if (!isQcow2(dev)) {
      // bdrv_snapshot_goto falls back to the protocol layer by closing and reopening the
      // image, which repeats the open's warnings.
      for (const w of warnings) options.onWarning?.(w);
      throw new NotSupportedError(
        `Could not apply snapshot '${name}': Block driver does not support snapshots`,
        { details: { errno: 'ENOTSUP' } },
      );
    }
    try {
      await dev.applySnapshot(name);
    } catch (err) {
      withPrefix(err, `Could not apply snapshot '${name}': `);
    }
  } finally {
    await dev.close();
  }
}

/** `qemu-img snapshot -d NAME`: found by name (bdrv_snapshot_find), deleted by id and name. */
export async function deleteImageSnapshot(
  filename: string,
  name: string,
  options: ImageSnapshotOptions = {},
): Promise<void> {
  const dev = await openForSnapshot(filename, false, options);
  try {
    const index =
      isQcow2(dev) && !hasFeature.dataFile(dev.header)
        ? findSnapshotIndex(dev.snapshots, undefined, name)
        : -1;
    if (!isQcow2(dev) || index < 0) {
      throw new InvalidArgumentError(`Could not delete snapshot '${name}': snapshot not found`, {
        details: { errno: 'ENOENT' },
      });
    }
    const sn = dev.snapshots[index]!;
    try {
      await dev.deleteSnapshot(sn.id, sn.name);
    } catch (err) {
      withPrefix(err, `Could not delete snapshot '${name}': `);
    }
  } finally {
    await dev.close();
  }
}

/** `qemu-img snapshot -l`: the snapshot table (empty for raw images and external data files). */
export async function listImageSnapshots(
  filename: string,
  options: ImageSnapshotOptions = {},
): Promise<SnapshotInfo[]> {
  const dev = await openForSnapshot(filename, true, options);
  try {
    if (!isQcow2(dev)) return [];
    return (await describeImage(dev)).snapshots ?? [];
  } finally {
    await dev.close();
  }
}

/** qemu-img snapshot without an action: the image is opened read-write and closed again. */
export async function touchImageForSnapshot(
  filename: string,
  options: ImageSnapshotOptions = {},
): Promise<void> {
  const dev = await openForSnapshot(filename, false, options);
  await dev.close();
}
