// qemu-img info: the ImageInfo of an image (block/qapi.c bdrv_query_image_info and
// qcow2_get_specific_info), and of its whole backing chain (qemu-img.c collect_image_info_list).
// Images are opened the way qemu-img info opens them: read-only, without the backing file and
// without data access (BDRV_O_NO_BACKING | BDRV_O_NO_IO), so untrusted images are safe to inspect.

import { realpath } from 'node:fs/promises';
import type { BlockDevice } from '../block/device.js';
import { CorruptImageError, truncateCString } from '../core/index.js';
import { openImage, isQcow2, type SupportedFormat } from '../image/open.js';
import { bitmapFlagNames, decodeBitmapDirectory } from '../qcow2/bitmap-directory.js';
import { COMPAT_LAZY_REFCOUNTS, INCOMPAT_CORRUPT, INCOMPAT_DIRTY } from '../qcow2/constants.js';
import { hasFeature } from '../qcow2/header.js';
import { resolveRelativeTo } from '../qcow2/open.js';
import type { Qcow2Device } from '../qcow2/qcow2-device.js';
import { readLuksInfo } from '../luks/luks-header.js';
import { LuksInfoDevice } from '../luks/luks-device.js';
import { isNbdUri } from '../nbd/uri.js';
import type { ImageInfo, ImageInfoSpecificQCow2, SnapshotInfo } from './qapi-types.js';

export interface InfoOptions {
  format?: SupportedFormat | undefined;
  /** Follow the backing chain (--backing-chain): one ImageInfo per image, top first. */
  backingChain?: boolean;
}

/** ImageInfo of an already opened device (filename as the device reports it). */
export async function describeImage(dev: BlockDevice): Promise<ImageInfo> {
  const info: ImageInfo = {
    filename: dev.filename,
    format: dev.format,
    'virtual-size': dev.size,
  };
  let actual = await dev.storage.allocatedSize().catch(() => -1);
  if (isQcow2(dev) && dev.dataStorage !== dev.storage) {
    actual += await dev.dataStorage.allocatedSize().catch(() => 0);
  }
  if (actual >= 0) info['actual-size'] = actual;
  if (dev instanceof LuksInfoDevice) {
    info.encrypted = true;
    info['dirty-flag'] = false;
    info['format-specific'] = { type: 'luks', data: dev.luks };
    return info;
  }
  if (!isQcow2(dev)) {
    // raw_get_info() asks the protocol: file-posix answers, QEMU's nbd driver has no
    // bdrv_get_info, so for a raw image over NBD qemu-img prints no dirty-flag.
    if (!isNbdUri(dev.filename)) info['dirty-flag'] = false;
    return info;
  }
  const h = dev.header;
  if (h.cryptMethod !== 0) info.encrypted = true;
  info['cluster-size'] = dev.layout.clusterSize;
  info['dirty-flag'] = (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n;
  info['format-specific'] = { type: 'qcow2', data: await qcow2Specific(dev) };
  if (h.backingFile !== undefined && h.backingFile !== '') {
    info['backing-filename'] = h.backingFile;
    info['full-backing-filename'] = resolveRelativeTo(dev.filename, h.backingFile);
    if (h.backingFormat) info['backing-filename-format'] = h.backingFormat;
  }
  // qcow2_snapshot_list() refuses images with an external data file (ENOTSUP): no list.
  if (dev.snapshots.length > 0 && !hasFeature.dataFile(h))
    info.snapshots = dev.snapshots.map(snapshotInfo);
  return info;
}

function snapshotInfo(sn: Qcow2Device['snapshots'][number]): SnapshotInfo {
  // QEMUSnapshotInfo holds id_str[128] and name[256] (pstrcpy truncates).
  const info: SnapshotInfo = {
    id: truncateCString(sn.id, 128),
    name: truncateCString(sn.name, 256),
    'vm-state-size': sn.vmStateSize,
    'date-sec': sn.dateSec,
    'date-nsec': sn.dateNsec,
    'vm-clock-sec': Number(sn.vmClockNsec / 1_000_000_000n),
    'vm-clock-nsec': Number(sn.vmClockNsec % 1_000_000_000n),
  };
  if (sn.icount !== undefined) info.icount = sn.icount;
  return info;
}

async function qcow2Specific(dev: Qcow2Device): Promise<ImageInfoSpecificQCow2> {
  const h = dev.header;
  const compressionType = h.compressionType === 1 ? 'zstd' : 'zlib';
  let data: ImageInfoSpecificQCow2;
  if (h.version === 2) {
    data = {
      compat: '0.10',
      'refcount-bits': dev.layout.refcountBits,
      'compression-type': compressionType,
    };
  } else {
    data = {
      compat: '1.1',
      'lazy-refcounts': (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
      corrupt: (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n,
      'extended-l2': dev.layout.extendedL2,
      'refcount-bits': dev.layout.refcountBits,
      'compression-type': compressionType,
    };
    const bitmaps = await readBitmaps(dev);
    if (bitmaps.length > 0) data.bitmaps = bitmaps;
    if (h.dataFile !== undefined && hasFeature.dataFile(h)) data['data-file'] = h.dataFile;
    if (hasFeature.dataFile(h)) data['data-file-raw'] = hasFeature.dataFileRaw(h);
  }
  if (h.cryptMethod === 1) data.encrypt = { format: 'aes' };
  else if (h.cryptMethod === 2 && h.cryptoHeader) {
    data.encrypt = { format: 'luks', ...(await readLuksInfo(dev.storage, h.cryptoHeader.offset)) };
  }
  // QAPI declaration order (the output layer reorders keys as QEMU's QDict does).
  return orderKeys(data, [
    'compat',
    'data-file',
    'data-file-raw',
    'extended-l2',
    'lazy-refcounts',
    'corrupt',
    'refcount-bits',
    'encrypt',
    'bitmaps',
    'compression-type',
  ]);
}

function orderKeys<T extends object>(obj: T, order: string[]): T {
  const out: Record<string, unknown> = {};
  for (const k of order) if (k in obj) out[k] = (obj as Record<string, unknown>)[k];
  return out as T;
}

async function readBitmaps(
  dev: Qcow2Device,
): Promise<NonNullable<ImageInfoSpecificQCow2['bitmaps']>> {
  const ext = dev.header.bitmaps;
  if (!ext) return [];
  if (ext.directorySize === 0)
    throw new CorruptImageError('Requested bitmap directory size is zero');
  const dir = new Uint8Array(ext.directorySize);
  await dev.storage.read(dir, ext.directoryOffset);
  return decodeBitmapDirectory(dir, ext.nbBitmaps, dev.layout.clusterSize, dev.size).map((b) => ({
    name: b.name,
    granularity: 2 ** b.granularityBits,
    flags: bitmapFlagNames(b.flags),
  }));
}

/** The info of one image, opened the way qemu-img info opens it. */
export async function imageInfo(filename: string, options: InfoOptions = {}): Promise<ImageInfo> {
  const dev = await openImage(filename, {
    format: options.format,
    readOnly: true,
    backing: 'none',
    noIO: true,
  });
  try {
    return orderKeys(await describeImage(dev), IMAGE_INFO_ORDER);
  } finally {
    await dev.close();
  }
}

const IMAGE_INFO_ORDER = [
  'filename',
  'format',
  'dirty-flag',
  'actual-size',
  'virtual-size',
  'cluster-size',
  'encrypted',
  'compressed',
  'backing-filename',
  'full-backing-filename',
  'backing-filename-format',
  'snapshots',
  'backing-image',
  'format-specific',
];

/** qemu-img info --backing-chain: every image of the chain, top first, with loop detection. */
export async function imageInfoChain(
  filename: string,
  options: InfoOptions = {},
): Promise<ImageInfo[]> {
  const out: ImageInfo[] = [];
  const seen = new Set<string>();
  let name: string | undefined = filename;
  let format = options.format;
  while (name !== undefined) {
    const real = await realpath(name).catch(() => name!);
    if (seen.has(name) || seen.has(real)) {
      throw new CorruptImageError(`Backing file '${name}' creates an infinite loop.`, {
        code: 'VMF_BACKING_LOOP',
      });
    }
    seen.add(name);
    seen.add(real);
    const info = await imageInfo(name, { format });
    out.push(info);
    name = info['full-backing-filename'];
    format = info['backing-filename-format'] as SupportedFormat | undefined;
  }
  return out;
}
