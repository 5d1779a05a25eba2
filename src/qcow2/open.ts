// Opening a qcow2 image: header validation, table bounds (QEMU qcow2_validate_table limits, so
// hostile images cannot make us allocate without bound), L1 and refcount table, snapshots,
// external data file, backing file, and the dirty-bit repair on read-write open.

import type { BlockDevice } from '../block/device.js';
import type { Storage } from '../block/storage.js';
import {
  CorruptImageError,
  InvalidArgumentError,
  isZero,
  NotSupportedError,
  readU32BE,
  withContext,
} from '../core/index.js';
import {
  AUTOCLEAR_MASK,
  CRYPT_AES,
  CRYPT_LUKS,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  MAX_L1_SIZE_BYTES,
  MAX_REFTABLE_SIZE_BYTES,
  MAX_SNAPSHOTS,
} from './constants.js';
import { decodeBitmapDirectory } from './bitmap-directory.js';
import { decodeHeader, hasFeature, type Qcow2Header } from './header.js';
import { makeLayout, sizeToL1, type Layout } from './layout.js';
import { PersistentBitmaps, persistentBitmaps } from './bitmaps/persistent-bitmaps.js';
import { Qcow2Device } from './qcow2-device.js';
import { getRefcount, Refcounts } from './refcount.js';
import { readSnapshotTable, type Qcow2Snapshot } from './snapshot-table.js';
import { TableCache } from './table-cache.js';

export interface BackingSpec {
  /** The name recorded in the image (backing-filename). */
  name: string;
  /** Resolved like QEMU: relative names are relative to the image's directory. */
  fullName: string;
  /** backing_fmt, if recorded. */
  format: string | undefined;
}

export interface Qcow2OpenOptions {
  /** Name used in messages and info output. */
  filename: string;
  readOnly: boolean;
  /**
   * Open for inspection only (qemu-img info: BDRV_O_NO_IO): the external data file is not
   * opened and encrypted images are accepted.
   */
  noIO?: boolean;
  /** Open for `check` (BDRV_O_CHECK): tolerate a missing reftable and a broken snapshot table. */
  checkMode?: boolean;
  /** Opens the backing image. Without it the backing file is not opened (reads see zeros). */
  openBacking?: (spec: BackingSpec) => Promise<BlockDevice>;
  /** Opens the external data file (path resolved like QEMU). */
  openDataFile?: (path: string, readOnly: boolean) => Promise<Storage>;
  /** The external data file, already open (qemu's "data-file" open option); takes precedence. */
  dataStorage?: Storage;
  /** Repairs an image left dirty by a killed lazy-refcounts writer (check -r all). */
  repairDirty?: (device: Qcow2Device) => Promise<void>;
  l2CacheBytes?: number;
  refcountCacheBytes?: number;
}

/** QEMU's default L2 cache covers up to 32 MiB of tables; refcount blocks get a quarter of that. */
const DEFAULT_L2_CACHE = 32 * 1024 * 1024;
const DEFAULT_REFCOUNT_CACHE = 8 * 1024 * 1024;

/** qcow2_validate_table(): entry count bounded, offset aligned and representable. */
function validateTable(
  offset: number,
  entries: number,
  entryLen: number,
  maxBytes: number,
  clusterSize: number,
  name: string,
): void {
  if (entries > maxBytes / entryLen) throw new CorruptImageError(`${name} too large`);
  if (Number.MAX_SAFE_INTEGER - entries * entryLen < offset || offset % clusterSize !== 0) {
    throw new CorruptImageError(`${name} offset invalid`);
  }
}

/** Resolve a backing (or data) file name relative to the image, like QEMU's path_combine(). */
export function resolveRelativeTo(imageFilename: string, name: string): string {
  if (name.startsWith('/') || /^[a-zA-Z0-9+.-]+:/.test(name)) return name;
  const slash = imageFilename.lastIndexOf('/');
  return slash < 0 ? name : imageFilename.slice(0, slash + 1) + name;
}

async function readHeaderCluster(storage: Storage): Promise<Uint8Array> {
  const first = new Uint8Array(4096);
  await storage.read(first, 0);
  const clusterBits = readU32BE(first, 20);
  if (clusterBits < 9 || clusterBits > 21) return first; // decodeHeader reports it
  const cs = 2 ** clusterBits;
  if (cs <= first.length) return first.subarray(0, Math.max(cs, 112));
  const cluster0 = new Uint8Array(cs);
  await storage.read(cluster0, 0);
  return cluster0;
}

/**
 * Refcount table entries (offsets). Only up to the last non-zero 4 KiB is decoded: a table is
 * mostly zeros (one 64 KiB cluster holds 8192 entries), and this loop runs cold, interpreted, at
 * every open, where it took ~1.5 ms of a CLI start.
 */
function readTableEntries(buf: Uint8Array): number[] {
  const out = new Array<number>(buf.length / 8).fill(0);
  let end = buf.length;
  while (end > 0 && isZero(buf.subarray(Math.max(0, end - 4096), end))) end -= 4096;
  const used = Math.min(out.length, Math.ceil(Math.max(0, end) / 8));
  for (let i = 0; i < used; i++) {
    const hi = readU32BE(buf, i * 8);
    const lo = readU32BE(buf, i * 8 + 4);
    out[i] = hi * 0x1_0000_0000 + ((lo & 0xffff_fe00) >>> 0);
  }
  return out;
}

export async function openQcow2(storage: Storage, options: Qcow2OpenOptions): Promise<Qcow2Device> {
  const cluster0 = await readHeaderCluster(storage);
  const header = decodeHeader(cluster0);
  const layout = makeLayout(
    header.clusterBits,
    header.refcountOrder,
    hasFeature.extendedL2(header),
  );
  const cs = layout.clusterSize;
  const checkMode = options.checkMode ?? false;

  if (hasFeature.corrupt(header) && !options.readOnly && !checkMode) {
    throw new CorruptImageError('qcow2: Image is corrupt; cannot be opened read/write', {
      code: 'VMF_QCOW2_CORRUPT',
    });
  }
  if (header.refcountTableClusters === 0 && !checkMode) {
    throw new CorruptImageError('Image does not contain a reference count table');
  }
  validateTable(
    header.refcountTableOffset,
    header.refcountTableClusters,
    cs,
    MAX_REFTABLE_SIZE_BYTES,
    cs,
    'Reference count table',
  );
  if (!checkMode) {
    validateTable(
      header.snapshotsOffset,
      header.nbSnapshots,
      40,
      40 * MAX_SNAPSHOTS,
      cs,
      'Snapshot table',
    );
  }
  validateTable(header.l1TableOffset, header.l1Size, 8, MAX_L1_SIZE_BYTES, cs, 'Active L1 table');
  const l1Needed = sizeToL1(layout, header.size);
  if (l1Needed > 0x7fff_ffff) throw new CorruptImageError('Image is too big');
  if (header.l1Size < l1Needed) throw new CorruptImageError('L1 table is too small');

  const l1Bytes = new Uint8Array(header.l1Size * 8);
  await storage.read(l1Bytes, header.l1TableOffset);
  const l1 = new Uint32Array(header.l1Size * 2);
  for (let i = 0; i < l1.length; i++) l1[i] = readU32BE(l1Bytes, i * 4);

  const reftableBytes = new Uint8Array(header.refcountTableClusters * cs);
  await storage.read(reftableBytes, header.refcountTableOffset);
  const refcounts = new Refcounts(
    storage,
    layout,
    readTableEntries(reftableBytes),
    header.refcountTableOffset,
    options.refcountCacheBytes ?? DEFAULT_REFCOUNT_CACHE,
    async (offset, clusters) => {
      // Hook up a moved refcount table in the header (qcow2_refcount_area).
      const b = new Uint8Array(12);
      const v = new DataView(b.buffer);
      v.setBigUint64(0, BigInt(offset));
      v.setUint32(8, clusters);
      await storage.write(b, 48);
      header.refcountTableOffset = offset;
      header.refcountTableClusters = clusters;
    },
  );

  // External data file.
  let dataStorage = storage;
  let ownsData = false;
  if (hasFeature.dataFile(header)) {
    if (options.dataStorage) {
      dataStorage = options.dataStorage;
      ownsData = true;
    } else if (!options.noIO) {
      if (header.dataFile === undefined)
        throw new InvalidArgumentError("'data-file' is required for this image");
      if (!options.openDataFile)
        throw new NotSupportedError(
          'This image has an external data file, but no way to open it was given',
        );
      // QEMU opens the recorded name as is: relative names are relative to the working
      // directory, not to the image (qcow2_do_open -> bdrv_open_child).
      const path = header.dataFile;
      try {
        dataStorage = await options.openDataFile(path, options.readOnly);
      } catch (err) {
        throw withContext(err, `Could not open data file '${path}'`);
      }
      ownsData = true;
    }
  } else if (hasFeature.dataFileRaw(header)) {
    throw new CorruptImageError('data-file-raw requires a data file');
  }

  if (header.cryptMethod !== 0 && !options.noIO) {
    if (header.cryptMethod === CRYPT_LUKS && !header.cryptoHeader) {
      throw new CorruptImageError(`Missing CRYPTO header for crypt method ${header.cryptMethod}`);
    }
    if (header.cryptMethod !== CRYPT_AES && header.cryptMethod !== CRYPT_LUKS) {
      throw new NotSupportedError(`Unsupported encryption method ${header.cryptMethod | 0}`);
    }
    // Data access needs the key, which QEMU takes from a secret object (--object secret,...
    // with -o encrypt.key-secret); vmforge has none, so it fails here as qemu-img does without.
    throw new InvalidArgumentError("Parameter 'encrypt.key-secret' is required for cipher", {
      code: 'VMF_QCOW2_ENCRYPTED',
    });
  }

  // Internal snapshots (skipped in check mode: a broken table must not stop a repair).
  let snapshots: Qcow2Snapshot[] = [];
  if (!checkMode && header.nbSnapshots > 0) {
    ({ snapshots } = await readSnapshotTable(
      async (off, len) => {
        const b = new Uint8Array(len);
        await storage.read(b, off);
        return b;
      },
      header.snapshotsOffset,
      header.nbSnapshots,
      header.size,
    ));
  }

  // qcow2_do_open() loads the persistent bitmaps (qcow2_load_dirty_bitmaps): an image whose
  // bitmap directory breaks the rules does not open, for info as for I/O.
  if (header.bitmaps) {
    const dir = new Uint8Array(header.bitmaps.directorySize);
    await storage.read(dir, header.bitmaps.directoryOffset);
    decodeBitmapDirectory(dir, header.bitmaps.nbBitmaps, cs, header.size);
  }

  let backing: BlockDevice | undefined;
  // An empty name means no backing file (bdrv_open_backing_file skips backing_file[0] == '\0').
  if (header.backingFile !== undefined && header.backingFile !== '' && options.openBacking) {
    const spec: BackingSpec = {
      name: header.backingFile,
      fullName: resolveRelativeTo(options.filename, header.backingFile),
      format: header.backingFormat,
    };
    backing = await options.openBacking(spec);
  }

  const l2Cache = new TableCache(storage, cs, options.l2CacheBytes ?? DEFAULT_L2_CACHE);
  let device: Qcow2Device;
  try {
    device = new Qcow2Device({
      filename: options.filename,
      storage,
      dataStorage,
      header,
      layout,
      l1,
      refcounts,
      l2Cache,
      backing,
      readOnly: options.readOnly,
      snapshots,
      ...(await detectMetadataPreallocation(storage, refcounts, layout)),
      ownsDataStorage: ownsData,
    });
  } catch (err) {
    await backing?.close().catch(() => undefined);
    throw err;
  }

  if (header.bitmaps && !header.staleBitmapsExtension) {
    // QEMU loads every bitmap at open and fails the open on a broken one (even for info).
    // A read-only image keeps what was loaded (persistentBitmaps() finds it, nothing is read
    // twice); a writable one only verifies, its bitmaps are marked in use on the first write.
    try {
      if (options.readOnly) await persistentBitmaps(device).loadAll();
      else await new PersistentBitmaps(device).verifyLoadable();
    } catch (err) {
      await device.close().catch(() => undefined);
      throw err;
    }
  }
  if (!options.readOnly) {
    // Guest writes keep the image's persistent dirty bitmaps up to date (src/qcow2/bitmaps).
    device.attachWriteObserver(new PersistentBitmaps(device));
    try {
      await prepareForWriting(device, header, options);
    } catch (err) {
      await device.close().catch(() => undefined);
      throw err;
    }
  }
  return device;
}

/** Read-write open: clear unknown autoclear bits, repair a dirty image (qcow2_do_open). */
async function prepareForWriting(
  device: Qcow2Device,
  header: Qcow2Header,
  options: Qcow2OpenOptions,
): Promise<void> {
  let update = header.staleBitmapsExtension;
  if ((header.autoclearFeatures & ~AUTOCLEAR_MASK) !== 0n) {
    header.autoclearFeatures &= AUTOCLEAR_MASK;
    update = true;
  }
  if (update) await device.rewriteHeader();
  if ((header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n && !(options.checkMode ?? false)) {
    if ((header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n) return;
    if (!options.repairDirty) {
      throw new NotSupportedError('Image is dirty (lazy refcounts) and cannot be repaired here', {
        code: 'VMF_QCOW2_DIRTY',
      });
    }
    await options.repairDirty(device);
  }
}

/**
 * qcow2_detect_metadata_preallocation(): many more clusters have refcounts than the file has
 * allocated blocks, so data clusters may be holes (preallocation=metadata).
 */
async function detectMetadataPreallocation(
  storage: Storage,
  refcounts: Refcounts,
  layout: Layout,
): Promise<{ metadataPreallocation: boolean; refcountCorruption?: string }> {
  const fileLength = await storage.size();
  // Storage without allocation information (an NBD export) cannot be preallocated as far as
  // we can tell: QEMU treats the ENOTSUP from bdrv_get_allocated_file_size() the same way.
  const allocated = await storage.allocatedSize().catch(() => -1);
  if (allocated < 0) return { metadataPreallocation: false };
  const realClusters = Math.floor(allocated / layout.clusterSize);
  const threshold = Math.max(Math.floor((realClusters * 10) / 9), realClusters + 2);
  const endCluster = Math.ceil(fileLength / layout.clusterSize);
  let count = 0;
  // Walk refcount blocks directly; a missing block means a run of zero refcounts.
  const per = layout.refblockEntries;
  for (let i = 0; i < endCluster && count < threshold;) {
    const blockOffset = refcounts.table[Math.floor(i / per)] ?? 0;
    // A block beyond the end of the file reads as zeros: nothing to count (and offsets beyond
    // 2^53 from a corrupt reftable cannot even be read).
    if (blockOffset !== 0 && blockOffset % layout.clusterSize !== 0) {
      // qcow2_get_refcount() fails on it (load_refcount_block's alignment check): QEMU's
      // detection stops with "no preallocation" and signals the corruption (fatal when the
      // image is writable; the device reports it on its first block-status call, as QEMU).
      const index = Math.floor(i / per);
      return {
        metadataPreallocation: false,
        refcountCorruption: `Refblock offset 0x${blockOffset.toString(16)} unaligned (reftable index: ${index === 0 ? '0' : `0x${index.toString(16)}`})`,
      };
    }
    if (blockOffset === 0 || blockOffset >= fileLength) {
      i = (Math.floor(i / per) + 1) * per;
      continue;
    }
    const block = await refcounts.cache.get(blockOffset);
    const stop = Math.min(endCluster, (Math.floor(i / per) + 1) * per);
    for (; i < stop && count < threshold; i++) {
      if (getRefcount(block, i % per, layout.refcountOrder) !== 0) count++;
    }
  }
  return { metadataPreallocation: count >= threshold };
}
