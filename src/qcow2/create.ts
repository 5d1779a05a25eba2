// Creating a qcow2 image the way QEMU 7.2's qcow2_co_create() does, so the result is laid out
// byte for byte like qemu-img's: header in cluster 0, a one-cluster refcount table in cluster 1,
// a refcount block in cluster 2, then the L1 table (and, with preallocation, L2 tables and data).

import type { Storage } from '../block/storage.js';
import type { BlockDevice } from '../block/device.js';
import type { PreallocMode } from '../block/preallocate.js';
import { ByteWriter, InvalidArgumentError, NotSupportedError } from '../core/index.js';
import {
  AUTOCLEAR_DATA_FILE_RAW,
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_ZLIB,
  COMPRESSION_ZSTD,
  DEFAULT_CLUSTER_SIZE,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTL2,
  QCOW2_MAGIC,
  V3_HEADER_LENGTH,
} from './constants.js';
import { validateClusterSize } from './layout.js';
import { openQcow2 } from './open.js';
import type { Qcow2Device } from './qcow2-device.js';

export interface Qcow2CreateOptions {
  /** Virtual size in bytes (rounded up to 512 as qemu-img does). */
  size: number;
  /** 2 (compat=0.10) or 3 (compat=1.1, default). */
  version?: 2 | 3;
  /** @default 65536 */
  clusterSize?: number;
  /** @default 'off' */
  preallocation?: PreallocMode;
  lazyRefcounts?: boolean;
  /** @default 16 */
  refcountBits?: number;
  extendedL2?: boolean;
  /** @default 'zlib' */
  compressionType?: 'zlib' | 'zstd';
  backingFile?: string;
  backingFormat?: string;
  /** Name of the external data file recorded in the image (data_file). */
  dataFile?: string;
  dataFileRaw?: boolean;
  /** The opened external data file, required when `dataFile` is set. */
  dataStorage?: Storage;
}

function fail(message: string): never {
  throw new InvalidArgumentError(message, { code: 'VMF_CREATE_OPTION' });
}

/** Validate options in qcow2_co_create()'s order, with its messages. */
export function validateQcow2CreateOptions(
  o: Qcow2CreateOptions,
): Required<
  Pick<
    Qcow2CreateOptions,
    'version' | 'clusterSize' | 'preallocation' | 'refcountBits' | 'compressionType'
  >
> & { clusterBits: number; extendedL2: boolean; lazyRefcounts: boolean } {
  const size = o.size;
  if (!Number.isSafeInteger(size) || size < 0) fail(`Invalid image size ${size}`);
  if (size % 512 !== 0) fail('Image size must be a multiple of 512 bytes');
  const version = o.version ?? 3;
  const clusterSize = o.clusterSize ?? DEFAULT_CLUSTER_SIZE;
  const extendedL2 = o.extendedL2 ?? false;
  if (extendedL2 && version < 3) {
    fail(
      'Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)',
    );
  }
  const clusterBits = validateClusterSize(clusterSize, extendedL2);
  let preallocation = o.preallocation ?? 'off';
  if (o.backingFile !== undefined && preallocation !== 'off' && !extendedL2) {
    fail('Backing file and preallocation can only be used at the same time if extended_l2 is on');
  }
  if (o.backingFormat !== undefined && o.backingFile === undefined) {
    fail('Backing format cannot be used without backing file');
  }
  const lazyRefcounts = o.lazyRefcounts ?? false;
  if (version < 3 && lazyRefcounts) {
    fail(
      'Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)',
    );
  }
  const refcountBits = o.refcountBits ?? 16;
  if (refcountBits > 64 || refcountBits < 1 || (refcountBits & (refcountBits - 1)) !== 0) {
    fail('Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (version < 3 && refcountBits !== 16) {
    fail(
      'Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)',
    );
  }
  if (o.dataFileRaw && o.dataFile === undefined) fail('data-file-raw requires data-file');
  if (o.dataFileRaw && o.backingFile !== undefined) {
    fail('Backing file and data-file-raw cannot be used at the same time');
  }
  if (o.dataFileRaw && preallocation === 'off') preallocation = 'metadata';
  if (o.dataFile !== undefined && version < 3) {
    fail(
      'External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)',
    );
  }
  const compressionType = o.compressionType ?? 'zlib';
  if (compressionType !== 'zlib' && version < 3) {
    fail(
      'Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)',
    );
  }
  return {
    version,
    clusterSize,
    clusterBits,
    extendedL2,
    preallocation,
    lazyRefcounts,
    refcountBits,
    compressionType,
  };
}

export interface CreateQcow2Context {
  filename: string;
  /** Opens the data file storage again for the final device (when dataFile is set). */
  openDataFile?: (path: string, readOnly: boolean) => Promise<Storage>;
  /** Opens the backing image, to take its size when `size` is not given (done by the caller). */
  backing?: BlockDevice;
}

/**
 * Write a new qcow2 image into `storage` (which must be empty) and return it opened read-write.
 * The caller closes the returned device.
 */
export async function createQcow2(
  storage: Storage,
  options: Qcow2CreateOptions,
  ctx: CreateQcow2Context,
): Promise<Qcow2Device> {
  const v = validateQcow2CreateOptions(options);
  if (options.dataFile !== undefined && !ctx.openDataFile) {
    throw new NotSupportedError('An external data file needs an opener');
  }
  const cs = v.clusterSize;
  const refcountOrder = Math.log2(v.refcountBits);

  // A minimal header: zero size, no L1, a refcount table at cluster 1 pointing to a block at 2.
  let incompat = 0n;
  let autoclear = 0n;
  if (options.dataFile !== undefined) incompat |= INCOMPAT_DATA_FILE;
  if (options.dataFileRaw) autoclear |= AUTOCLEAR_DATA_FILE_RAW;
  if (v.compressionType !== 'zlib') incompat |= INCOMPAT_COMPRESSION;
  if (v.extendedL2) incompat |= INCOMPAT_EXTL2;
  const w = ByteWriter.alloc(cs);
  w.u32(QCOW2_MAGIC).u32(v.version).u64(0).u32(0).u32(v.clusterBits).u64(0).u32(0).u32(0).u64(0);
  w.u64(cs).u32(1).u32(0).u64(0);
  w.u64(incompat)
    .u64(v.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0n)
    .u64(autoclear);
  w.u32(refcountOrder)
    .u32(V3_HEADER_LENGTH)
    .u8(v.compressionType === 'zstd' ? COMPRESSION_ZSTD : COMPRESSION_ZLIB);
  await storage.write(w.buf, 0);
  const reftable = new Uint8Array(2 * cs);
  new DataView(reftable.buffer).setBigUint64(0, BigInt(2 * cs));
  await storage.write(reftable, cs);

  const dataPath = options.dataFile;
  const device = await openQcow2(storage, {
    filename: ctx.filename,
    readOnly: false,
    ...(dataPath !== undefined && options.dataStorage ? { dataStorage: options.dataStorage } : {}),
  });
  try {
    const first = await device.refcounts.allocClusters(3);
    if (first !== 0)
      throw new Error('internal error: first cluster in empty image is already in use');
    if (dataPath !== undefined) device.header.dataFile = dataPath;
    // A full header, feature name table included (qcow2_update_header).
    await device.rewriteHeader();
    await device.grow(Math.ceil(options.size / 512) * 512, v.preallocation);
    if (options.backingFile !== undefined) {
      await device.setBackingFile(options.backingFile, options.backingFormat);
    }
    await device.flush();
  } catch (err) {
    await device.close().catch(() => undefined);
    throw err;
  }
  return device;
}
