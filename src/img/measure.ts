// qemu-img measure as a library call: how large a new image would be, for a given virtual size
// or to hold the data of an existing image (block.c bdrv_measure). The qcow2 estimate mirrors
// block/qcow2.c qcow2_measure() and qcow2_calc_prealloc_size() (header cluster, L2 and L1
// tables, and the refcount fixed point of qcow2_refcount_metadata_size()); raw mirrors
// block/raw-format.c raw_measure(). Results can exceed 2^53 (a 2 MiB-cluster qcow2 of exabytes),
// so the arithmetic is done on BigInt, in QEMU's uint64_t.

import type { BlockDevice } from '../block/device.js';
import {
  AbortError,
  byteLength,
  InvalidArgumentError,
  VmforgeError,
  NotSupportedError,
  throwIfAborted,
} from '../core/index.js';
import { isQcow2 } from '../image/open.js';
import { decodeBitmapDirectory } from '../qcow2/bitmap-directory.js';
import type { Qcow2Device } from '../qcow2/qcow2-device.js';
import { createOptionLists } from './create.js';
import type { BlockMeasureInfo } from './qapi-types.js';
import { appendOpts, FILE_CREATE_OPTS, QemuOpts, type OptDesc } from './qemu-opts.js';
import { QEMU_NON_CREATABLE_DRIVERS, QEMU_CREATABLE_DRIVERS } from './qemu-drivers.js';
import {
  BDRV_BLOCK_ALLOCATED,
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_ZERO,
  blockStatusAbove,
  qemuLength,
  SECTOR,
} from './qemu-block-status.js';

export type PreallocationMode = 'off' | 'metadata' | 'falloc' | 'full';

/** The qcow2 creation parameters that change its size (qcow2_measure reads only these). */
export interface Qcow2MeasureOptions {
  /** Virtual size when there is no source image (rounded up to the cluster size). */
  size?: number | bigint;
  /** @default 65536 */
  clusterSize?: number;
  /** @default false */
  extendedL2?: boolean;
  /** 2 (compat=0.10) or 3 (compat=1.1). @default 3 */
  version?: 2 | 3;
  /** @default 16 */
  refcountBits?: number;
  /** full and falloc count every data cluster as required. @default 'off' */
  preallocation?: PreallocationMode;
  /** A backing file is named: the source's clusters are all counted (QEMU cannot know which the backing file shares). */
  backingFile?: boolean;
}

export interface MeasureOptions {
  /** Source image (opened read-only, with any -l snapshot loaded); omitted with a size. */
  source?: BlockDevice;
  signal?: AbortSignal;
}

const L1E_SIZE = 8n;
const REFTABLE_ENTRY_SIZE = 8n;
const MAX_L1_SIZE = 32n * 1024n * 1024n;
const U64 = (v: bigint): bigint => BigInt.asUintN(64, v);
const divRoundUp = (n: bigint, d: bigint): bigint => (n + d - 1n) / d;
const roundUp = (n: bigint, d: bigint): bigint => U64(divRoundUp(n, d) * d);

/**
 * qcow2_refcount_metadata_size(): bytes of refcount blocks and table needed to count
 * `clusters` clusters plus the refcount metadata itself (the fixed point where no further block
 * or table cluster is needed).
 */
export function qcow2RefcountMetadataSize(
  clusters: bigint,
  clusterSize: bigint,
  refcountOrder: number,
  generousIncrease = false,
): bigint {
  const blocksPerTableCluster = clusterSize / REFTABLE_ENTRY_SIZE;
  const refcountsPerBlock = (clusterSize * 8n) / (1n << BigInt(refcountOrder));
  let table = 0n;
  let blocks = 0n;
  let last: bigint;
  let n = 0n;
  do {
    last = n;
    blocks = divRoundUp(clusters + table + blocks, refcountsPerBlock);
    table = divRoundUp(blocks, blocksPerTableCluster);
    n = clusters + blocks + table;
    if (n === last && generousIncrease) {
      clusters += divRoundUp(table, 2n);
      n = 0n; // force another loop
      generousIncrease = false;
    }
  } while (n !== last);
  return (blocks + table) * clusterSize;
}

/** qcow2_calc_prealloc_size(): the size of a fully allocated image, metadata included. */
export function qcow2CalcPreallocSize(
  totalSize: bigint,
  clusterSize: bigint,
  refcountOrder: number,
  extendedL2: boolean,
): bigint {
  const l2eSize = extendedL2 ? 16n : 8n;
  const alignedTotalSize = roundUp(totalSize, clusterSize);
  let meta = clusterSize; // header
  let nl2e = alignedTotalSize / clusterSize;
  nl2e = roundUp(nl2e, clusterSize / l2eSize);
  meta += nl2e * l2eSize;
  let nl1e = (nl2e * l2eSize) / clusterSize;
  nl1e = roundUp(nl1e, clusterSize / L1E_SIZE);
  meta += nl1e * L1E_SIZE;
  meta += qcow2RefcountMetadataSize(
    (meta + alignedTotalSize) / clusterSize,
    clusterSize,
    refcountOrder,
    false,
  );
  return meta + alignedTotalSize;
}

/** validate_cluster_size() with qcow2_opt_get_cluster_size_del()'s messages. */
function validateClusterSize(clusterSize: number, extendedL2: boolean): void {
  const bits = Math.log2(clusterSize);
  if (!Number.isInteger(bits) || bits < 9 || bits > 21) {
    throw new InvalidArgumentError('Cluster size must be a power of two between 512 and 2048k');
  }
  if (extendedL2 && clusterSize < 512 * 32) {
    throw new InvalidArgumentError(
      'Extended L2 entries are only supported with cluster sizes of at least 16384 bytes',
    );
  }
}

/** qcow2_opt_get_refcount_bits_del()'s checks. */
function validateRefcountBits(bits: number, version: number): void {
  if (bits > 64 || bits < 1 || (bits & (bits - 1)) !== 0) {
    throw new InvalidArgumentError(
      'Refcount width must be a power of two and may not exceed 64 bits',
    );
  }
  if (version < 3 && bits !== 16) {
    throw new InvalidArgumentError(
      'Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)',
    );
  }
}

/** Block status of the source failed (qemu-img: "Unable to get block status: <strerror>"). */
export class MeasureStatusError extends VmforgeError {
  override name = 'MeasureStatusError';
  constructor(cause: unknown) {
    super('data', 'VMF_MEASURE_STATUS', 'Unable to get block status', { cause });
  }
}

/** The bytes of the source that need data clusters (the loop of qcow2_measure()). */
async function allocatedBytes(
  source: BlockDevice,
  ssize: number,
  clusterSize: number,
  signal: AbortSignal | undefined,
): Promise<bigint> {
  let required = 0n;
  const want = BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
  let offset = 0;
  while (offset < ssize) {
    throwIfAborted(signal);
    let st;
    try {
      st = await blockStatusAbove(source, offset, ssize - offset, ssize);
    } catch (err) {
      if (err instanceof AbortError) throw err;
      throw new MeasureStatusError(err);
    }
    let pnum = st.pnum;
    // Zero regions need nothing (safe without a backing file).
    if (!(st.flags & BDRV_BLOCK_ZERO) && (st.flags & want) === want) {
      // Extend to the end of the cluster, and count the cluster's head QEMU skipped over.
      pnum = Math.ceil((offset + pnum) / clusterSize) * clusterSize - offset;
      required += BigInt((offset % clusterSize) + pnum);
    }
    offset += pnum;
  }
  return required;
}

/**
 * qcow2_get_persistent_dirty_bitmap_size(): room for copying the source's persistent bitmaps
 * into a qcow2 image with `clusterSize` clusters (each bitmap fully allocated, its table, and
 * the directory).
 */
export async function persistentBitmapsSize(
  source: Qcow2Device,
  clusterSize: number,
): Promise<bigint> {
  const ext = source.header.bitmaps;
  // Without the autoclear bit QEMU treats the bitmaps as stale and does not load them.
  if (!ext || ext.nbBitmaps === 0 || !source.hasBitmapsAutoclear()) return 0n;
  const dir = new Uint8Array(ext.directorySize);
  await source.storage.read(dir, ext.directoryOffset);
  const length = BigInt(qemuLength(source));
  const cs = BigInt(clusterSize);
  let size = 0n;
  let dirSize = 0n;
  for (const bm of decodeBitmapDirectory(
    dir,
    ext.nbBitmaps,
    source.layout.clusterSize,
    source.size,
  )) {
    const granularity = 1n << BigInt(bm.granularityBits);
    const bytes = divRoundUp(divRoundUp(length, granularity), 8n);
    const clusters = divRoundUp(bytes, cs);
    size += clusters * cs; // assume the whole bitmap is allocated
    size += roundUp(clusters * 8n, cs); // its bitmap table
    const nameLength = BigInt(byteLength(bm.name.split('\u0000')[0]!)); // strlen()
    dirSize += roundUp(24n + nameLength, 8n); // calc_dir_entry_size()
  }
  return size + roundUp(dirSize, cs);
}

/** qcow2_measure(). */
export async function measureQcow2(
  options: Qcow2MeasureOptions = {},
  { source, signal }: MeasureOptions = {},
): Promise<BlockMeasureInfo> {
  const extendedL2 = options.extendedL2 ?? false;
  const clusterSize = options.clusterSize ?? 65536;
  validateClusterSize(clusterSize, extendedL2);
  const version = options.version ?? 3;
  const refcountBits = options.refcountBits ?? 16;
  validateRefcountBits(refcountBits, version);
  const cs = BigInt(clusterSize);

  let virtualSize = roundUp(U64(BigInt(options.size ?? 0)), cs);
  const l2eSize = extendedL2 ? 16n : 8n;
  const l2Tables = divRoundUp(virtualSize / cs, cs / l2eSize);
  if (l2Tables * L1E_SIZE > MAX_L1_SIZE) {
    throw new InvalidArgumentError('The image size is too large (try using a larger cluster size)');
  }

  let required = 0n;
  if (source) {
    const ssize = qemuLength(source);
    virtualSize = roundUp(BigInt(ssize), cs);
    // With a backing file QEMU cannot tell what the new image shares with it: count it all.
    required = options.backingFile
      ? virtualSize
      : await allocatedBytes(source, ssize, clusterSize, signal);
  }
  if (options.preallocation === 'full' || options.preallocation === 'falloc') {
    required = virtualSize;
  }

  const refcountOrder = Math.log2(refcountBits);
  const fullyAllocated = qcow2CalcPreallocSize(virtualSize, cs, refcountOrder, extendedL2);
  const info: BlockMeasureInfo = {
    required: toQNum(U64(fullyAllocated - virtualSize + required)),
    'fully-allocated': toQNum(fullyAllocated),
  };
  // Bitmaps only when both the source and the target (v3) can hold persistent bitmaps.
  if (version >= 3 && source && isQcow2(source) && source.header.version >= 3) {
    info.bitmaps = toQNum(await persistentBitmapsSize(source, clusterSize));
  }
  return info;
}

/** raw_measure(): a raw image is as large as its virtual size. */
export function measureRaw(
  options: { size?: number | bigint } = {},
  { source }: MeasureOptions = {},
): BlockMeasureInfo {
  const required = source
    ? BigInt(qemuLength(source))
    : roundUp(U64(BigInt(options.size ?? 0)), BigInt(SECTOR));
  return { required: toQNum(required), 'fully-allocated': toQNum(required) };
}

/** A number while it is exact, else a bigint (what the QAPI output layer prints). */
function toQNum(v: bigint): number | bigint {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** block/crypto.c block_crypto_create_opts_luks. */
const LUKS_CREATE_OPTS: OptDesc[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'key-secret', type: 'string', help: 'ID of secret providing LUKS passphrase' },
  { name: 'cipher-alg', type: 'string', help: 'Name of encryption cipher algorithm' },
  { name: 'cipher-mode', type: 'string', help: 'Name of encryption cipher mode' },
  { name: 'ivgen-alg', type: 'string', help: 'Name of IV generator algorithm' },
  { name: 'ivgen-hash-alg', type: 'string', help: 'Name of IV generator hash algorithm' },
  { name: 'hash-alg', type: 'string', help: 'Name of encryption hash algorithm' },
  { name: 'iter-time', type: 'number', help: 'Time to spend in PBKDF in milliseconds' },
];

/** qemu-img measure's inputs, as text: what the CLI passes through. */
export interface MeasureRequest extends MeasureOptions {
  /** Target format (-O). @default 'raw' */
  format?: string;
  /** -o option text (several -o joined with commas). */
  options?: string;
  /** --size (overrides a size in `options`). */
  size?: number | bigint;
}

/**
 * Thrown when -o does not parse for the target format; qemu-img prints the message, then
 * "Invalid options for file format '<fmt>'".
 */
export class MeasureOptionsError extends InvalidArgumentError {
  readonly format: string;
  constructor(cause: InvalidArgumentError, format: string) {
    super(cause.message, { code: 'VMF_MEASURE_OPTIONS', cause });
    this.format = format;
  }
}

/** The option list img_measure() parses -o against: the format's create options and file's. */
function measureOptionList(format: string): OptDesc[] {
  if (format === 'luks') return appendOpts(LUKS_CREATE_OPTS, FILE_CREATE_OPTS);
  const lists = createOptionLists(format);
  if (!lists) throw new Error(`internal error: no option list for ${format}`);
  return lists.all;
}

function parseEnum<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
): T | undefined {
  if (value === undefined) return undefined;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new InvalidArgumentError(`invalid parameter value: ${value}`);
}

/** luks needs a secret object, which vmforge does not have (--object is refused). */
function refuseLuks(opts: QemuOpts, prefix: string): never {
  const secret = opts.str(`${prefix}key-secret`);
  if (secret === undefined) {
    throw new InvalidArgumentError(`Parameter '${prefix}key-secret' is required for cipher`);
  }
  throw new InvalidArgumentError(`No secret with id '${secret}'`);
}

/** img_measure() from the option parsing on: bdrv_measure() of the target format. */
export async function measureImage(req: MeasureRequest): Promise<BlockMeasureInfo> {
  const format = req.format ?? 'raw';
  if (QEMU_NON_CREATABLE_DRIVERS.has(format)) {
    throw new InvalidArgumentError(`Format driver '${format}' does not support image creation`);
  }
  if (!QEMU_CREATABLE_DRIVERS.has(format)) {
    throw new InvalidArgumentError(`Unknown file format '${format}'`);
  }
  if (format !== 'qcow2' && format !== 'raw' && format !== 'luks') {
    throw new NotSupportedError(`Block driver '${format}' does not support size measurement`);
  }
  const opts = new QemuOpts(measureOptionList(format));
  try {
    if (req.options) opts.parse(req.options);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new MeasureOptionsError(err, format);
    throw err;
  }
  const measureOptions = {
    ...(req.source ? { source: req.source } : {}),
    ...(req.signal ? { signal: req.signal } : {}),
  };
  const size = req.size ?? (opts.get('size')?.value as bigint | undefined);

  if (format === 'raw') return measureRaw(size !== undefined ? { size } : {}, measureOptions);
  if (format === 'luks') refuseLuks(opts, '');

  // qcow2_measure() reads its options in this order; the first bad one is reported.
  const extendedL2 = opts.bool('extended_l2') ?? false;
  const clusterSize = opts.get('cluster_size')?.value as bigint | undefined;
  if (clusterSize !== undefined) {
    // size_t cluster_size; validate_cluster_size() looks at its low 32 bits.
    const cs = Number(clusterSize & 0xffff_ffffn);
    validateClusterSize(clusterSize > 0xffff_ffffn ? 0 : cs, extendedL2);
  }
  const compat = opts.str('compat');
  let version: 2 | 3 = 3;
  if (compat === '0.10') version = 2;
  else if (compat !== undefined && compat !== '1.1') {
    throw new InvalidArgumentError(`Invalid compatibility level: '${compat}'`);
  }
  const refcountBits = opts.get('refcount_bits')?.value as bigint | undefined;
  validateRefcountBits(
    refcountBits === undefined ? 16 : refcountBits > 64n ? 0 : Number(refcountBits),
    version,
  );
  const preallocation = parseEnum(opts.str('preallocation'), [
    'off',
    'metadata',
    'falloc',
    'full',
  ] as const);
  if (opts.str('encrypt.format') === 'luks') refuseLuks(opts, 'encrypt.');

  return measureQcow2(
    {
      ...(size !== undefined ? { size } : {}),
      ...(clusterSize !== undefined ? { clusterSize: Number(clusterSize) } : {}),
      extendedL2,
      version,
      ...(refcountBits !== undefined ? { refcountBits: Number(refcountBits) } : {}),
      ...(preallocation ? { preallocation } : {}),
      backingFile: opts.has('backing_file'),
    },
    measureOptions,
  );
}
