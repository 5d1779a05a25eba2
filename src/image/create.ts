// createImage(): make a new raw or qcow2 image file, as `qemu-img create` does
// (block.c bdrv_img_create + the format's create function).

import { FileStorage } from '../block/file-storage.js';
import { truncateHostFile, type PreallocMode } from '../block/preallocate.js';
import { InvalidArgumentError, NotSupportedError, withContext } from '../core/index.js';
import {
  createQcow2,
  validateQcow2CreateOptions,
  type Qcow2CreateOptions,
} from '../qcow2/create.js';
import { resolveRelativeTo } from '../qcow2/open.js';
import { isProtocolUri, openImage, type SupportedFormat } from './open.js';

export interface CreateImageOptions extends Partial<Omit<Qcow2CreateOptions, 'dataStorage'>> {
  /** @default 'raw' (as qemu-img create) */
  format?: SupportedFormat;
  /**
   * Virtual size; may be omitted with a backing file (its size is used, which requires opening
   * it), like qemu-img create.
   */
  size?: number;
  /** Do not open the backing file (qemu-img create -u); `size` is then required. */
  unsafe?: boolean;
  /**
   * Raw without preallocation: do not write the first block (QEMU's allocate_first_block); the
   * caller will (convert: FileStorageOptions.reserveAhead `fill`). @default true
   */
  firstBlock?: boolean;
  /**
   * 'unsafe': the new image is never flushed to disk while it is created (convert's target with
   * -t unsafe, its default, whose writes are never flushed either: syncing its empty metadata
   * first buys nothing and costs journal commits). @default 'writeback' (flushed before close,
   * as qemu-img create)
   */
  cache?: 'writeback' | 'unsafe';
}

/**
 * Resolve the size and check the backing file as bdrv_img_create() does. A backing file without
 * a format gets the probed format recorded (qemu-img refuses to guess; the library records what
 * it found rather than leave the image to be probed at every open).
 */
async function resolveSize(filename: string, o: CreateImageOptions): Promise<number> {
  let size = o.size;
  if (o.backingFile !== undefined && o.backingFile !== '' && (!o.unsafe || size === undefined)) {
    const path = resolveRelativeTo(filename, o.backingFile);
    let backing;
    try {
      backing = await openImage(path, {
        ...(o.backingFormat ? { format: o.backingFormat as SupportedFormat } : {}),
        readOnly: true,
        backing: 'none',
        noIO: true,
      });
    } catch (err) {
      // qemu-img: "<backing>: Could not open '<backing>': ..." then "Could not open backing image."
      throw withContext(err, 'Could not open backing image');
    }
    if (size === undefined) size = backing.size;
    if (o.backingFormat === undefined && (backing.format === 'raw' || backing.format === 'qcow2')) {
      o.backingFormat = backing.format;
    }
    await backing.close();
  }
  if (size === undefined) throw new InvalidArgumentError('Image creation needs a size parameter');
  return size;
}

/**
 * "Creating" an image on a protocol that cannot create files (an NBD export), as QEMU's
 * bdrv_co_create_opts_simple(): open what is there, insist it is big enough, and zero the first
 * sector so an old header cannot be probed. Only raw images can be laid over a fixed export.
 */
async function createOnProtocol(filename: string, format: string, size: number): Promise<void> {
  if (format !== 'raw') {
    throw new NotSupportedError(
      `Protocol '${filename.split(':')[0]}' does not support creating ${format} images (use -n with an existing image)`,
    );
  }
  const dev = await openImage(filename, { format: 'raw', readOnly: false });
  try {
    if (dev.size < size) {
      throw new InvalidArgumentError(
        `Protocol driver does not support image creation, and the image is too small: ${dev.size} bytes < ${size}`,
      );
    }
    await dev.writeZeroes(0, Math.min(512, dev.size));
    await dev.flush();
  } finally {
    await dev.close();
  }
}

export async function createImage(
  filename: string,
  options: CreateImageOptions = {},
): Promise<void> {
  const format = options.format ?? 'raw';
  options = { ...options };
  const size = await resolveSize(filename, options);
  if (isProtocolUri(filename)) return createOnProtocol(filename, format, size);
  if (format === 'raw') {
    const prealloc: PreallocMode = options.preallocation ?? 'off';
    if (prealloc === 'metadata') {
      throw new InvalidArgumentError('Unsupported preallocation mode: metadata');
    }
    // Not synced at close (see below); preallocation=full is, as QEMU's handle_aiocb_truncate
    // fsyncs it whatever the cache mode.
    const storage = await FileStorage.open(filename, {
      create: true,
      truncate: true,
      cache: prealloc === 'full' ? 'writeback' : 'unsafe',
    });
    try {
      await storage.truncate(0);
      // file-posix raw_co_create_opts(): the size is rounded up to whole 512-byte sectors.
      await truncateHostFile(storage, Math.ceil(size / 512) * 512, prealloc, {
        firstBlock: options.firstBlock ?? true,
      });
      // No flush: QEMU's raw_co_create() does not sync either (an fdatasync of the new file
      // costs a journal commit, and would place its first block before the data is written).
    } finally {
      await storage.close();
    }
    return;
  }
  if (format !== 'qcow2')
    throw new InvalidArgumentError(`Unknown file format '${format as string}'`);

  const { dataFile } = options;
  const qcowOptions: Qcow2CreateOptions = { ...options, size };
  // Validate before touching the file system, as qcow2_co_create does.
  validateQcow2CreateOptions({ ...qcowOptions, size: Math.ceil(size / 512) * 512 });
  const cache = options.cache ?? 'writeback';
  // Its writes (header, tables) are small and in order: made synchronously, without a
  // thread-pool round trip each (~0.1-0.2 ms).
  const storage = await FileStorage.open(filename, {
    create: true,
    truncate: true,
    cache,
    syncWriteMax: 1024 * 1024,
  });
  let dataStorage: FileStorage | undefined;
  try {
    if (dataFile !== undefined) {
      // Like qemu-img, the data file name is used as given (relative to the working directory).
      dataStorage = await FileStorage.open(dataFile, {
        create: true,
        truncate: true,
        cache,
      });
    }
    const device = await createQcow2(
      storage,
      {
        ...qcowOptions,
        size: Math.ceil(size / 512) * 512,
        ...(dataStorage ? { dataStorage } : {}),
      },
      {
        filename,
        openDataFile: (path, readOnly) => FileStorage.open(path, { readOnly }),
      },
    );
    await device.close();
  } catch (err) {
    await storage.close().catch(() => undefined);
    await dataStorage?.close().catch(() => undefined);
    throw err;
  }
}
