// Open one image for export the way qemu-nbd's blk_new_open does: -f names the format (or it is
// probed, with QEMU's warning for raw), -r opens read-only, -s puts a throwaway overlay on top,
// and the block options (--cache, --discard, --detect-zeroes, -o) wrap the result.

import type { BlockDevice } from '../../block/device.js';
import { FileStorage } from '../../block/file-storage.js';
import { InvalidArgumentError, NotSupportedError, withContext } from '../../core/index.js';
import { ExportDevice, type ExportDeviceOptions } from '../../nbd/export-device.js';
import { OverlayDevice } from '../../nbd/overlay-device.js';
import { RawDevice } from '../../raw/raw-device.js';

export interface OpenExportOptions extends ExportDeviceOptions {
  format?: string | undefined;
  readOnly: boolean;
  snapshot: boolean;
}

export interface OpenedImage {
  device: BlockDevice;
  /** Printed once on stderr, as QEMU's warn_report does. */
  warnings: string[];
}

const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb];

async function probe(storage: FileStorage): Promise<string> {
  const head = new Uint8Array(4);
  await storage.read(head, 0);
  return QCOW2_MAGIC.every((b, i) => head[i] === b) ? 'qcow2' : 'raw';
}

async function openFormat(path: string, format: string, readOnly: boolean): Promise<BlockDevice> {
  if (format !== 'raw' && format !== 'qcow2') {
    throw new InvalidArgumentError(`Unknown driver '${format}'`);
  }
  const storage = await FileStorage.open(path, { readOnly });
  try {
    if (format === 'qcow2') {
      throw new NotSupportedError(
        'qcow2 exports need the qcow2 engine, which this build of vmforge does not have yet',
      );
    }
    return await RawDevice.open(storage, { filename: path });
  } catch (err) {
    await storage.close();
    throw err;
  }
}

/** Open `path` for export. Errors read "Failed to blk_new_open 'PATH': ..." like qemu-nbd's. */
export async function openExportImage(path: string, o: OpenExportOptions): Promise<OpenedImage> {
  const warnings: string[] = [];
  try {
    // With -s the image itself is only read (writes go to the overlay).
    const readOnly = o.readOnly || o.snapshot;
    let format = o.format;
    let probedRaw = false;
    if (format === undefined) {
      const storage = await FileStorage.open(path, { readOnly: true });
      try {
        format = await probe(storage);
      } finally {
        await storage.close();
      }
      if (format === 'raw') {
        probedRaw = !readOnly;
        warnings.push(
          `WARNING: Image format was not specified for '${path}' and probing guessed raw.\n` +
            '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n' +
            "         Specify the 'raw' format explicitly to remove the restrictions.",
        );
      }
    }
    let device = await openFormat(path, format, readOnly);
    if (o.snapshot) {
      try {
        device = await OverlayDevice.create(device);
      } catch (err) {
        await device.close();
        throw err;
      }
    }
    const options: ExportDeviceOptions = { probedRaw };
    if (o.cache !== undefined) options.cache = o.cache;
    if (o.discard !== undefined) options.discard = o.discard;
    if (o.detectZeroes !== undefined) options.detectZeroes = o.detectZeroes;
    if (o.offset !== undefined) options.offset = o.offset;
    try {
      return { device: new ExportDevice(device, options), warnings };
    } catch (err) {
      await device.close();
      throw err;
    }
  } catch (err) {
    throw withContext(err, `Failed to blk_new_open '${path}'`);
  }
}
