// qemu-img convert as a library call (qemu-img.c img_convert): option checks with qemu-img's
// messages, target creation from -O/-o/-B/-F, opening the target, then the copy engine.

import { rm } from 'node:fs/promises';
import type { BlockDevice } from '../../block/device.js';
import { firstBlockLength } from '../../block/preallocate.js';
import type { ReserveAheadOptions } from '../../block/reserve-ahead.js';
import {
  InvalidArgumentError,
  LeakyBucket,
  NotSupportedError,
  withContext,
} from '../../core/index.js';
import { createImage } from '../../image/create.js';
import { isQcow2, openImage, type SupportedFormat } from '../../image/open.js';
import { createOptionLists, toCreateOptions } from '../create.js';
import { QemuOpts } from '../qemu-opts.js';
import { countAllocated, runCopy, type CopyPlan } from './copy.js';
import { nativeCopyTarget, runNativeCopy } from './native-copy.js';
// --bitmaps (persistent bitmaps, owned by src/qcow2/bitmaps): three marked call sites below.
import {
  checkBitmapsCopyable,
  checkBitmapsTarget,
  copyBitmaps,
} from '../../qcow2/bitmaps/index.js';

const SECTOR = 512;
const MAX_BUF_SECTORS = 32768;
const IO_BUF_SECTORS = (2 * 1024 * 1024) / SECTOR;
/**
 * Target writes up to this size are synchronous (see FileStorageOptions.syncWriteMax): all of
 * them. In-order writes are serialized anyway, and on the thread pool they queued behind the
 * chunk reads (libuv's pool is FIFO) and paid a round trip each.
 */
const SYNC_WRITE_MAX = Infinity;
/** Source reads up to this size try the page cache synchronously (FileStorageOptions). */
const SYNC_READ_MAX = 256 * 1024;
/**
 * Disk space reserved ahead of the target's writes (FileStorageOptions.reserveAhead): 32 MiB
 * first, doubling up to 256 MiB while the writes go on sequentially.
 */
const RESERVE_SPAN = 32 * 1024 * 1024;
const RESERVE_SPAN_MAX = 256 * 1024 * 1024;

export type CacheMode = 'none' | 'writeback' | 'writethrough' | 'directsync' | 'unsafe';

export interface ConvertOptions {
  sources: string[];
  /** -f: format of every source (probed when absent). */
  sourceFormat?: SupportedFormat | undefined;
  target: string;
  /** -O: target format (default raw, also for -n targets, as qemu-img). */
  targetFormat?: string | undefined;
  /** -o: target create options. */
  options?: string | undefined;
  /** -c */
  compress?: boolean;
  /** -B / -F */
  backingFile?: string | undefined;
  backingFormat?: string | undefined;
  /** -n: write into an existing target. */
  existingTarget?: boolean;
  /** --target-is-zero (with -n): the target already reads as zeros. */
  targetIsZero?: boolean;
  /** -S in bytes: zero runs of at least this size become holes. @default 4096; 0 = fully allocate */
  sparseSize?: number;
  /** -m @default 8 */
  coroutines?: number;
  /** -W: allow out-of-order writes. */
  outOfOrder?: boolean;
  /** -l: read this internal snapshot of the source: an id or name, or explicit id/name. */
  snapshot?: string | { id?: string; name?: string } | undefined;
  /** --salvage */
  salvage?: boolean;
  /** --bitmaps: copy the source's persistent bitmaps (single qcow2 v3 source and target). */
  bitmaps?: boolean;
  /** --skip-broken-bitmaps: with --bitmaps, skip inconsistent bitmaps with a warning. */
  skipBrokenBitmaps?: boolean;
  /** -C: copy offloading. */
  copyRange?: boolean;
  /** -t (target cache; default unsafe), -T (source cache). */
  cache?: CacheMode | undefined;
  sourceCache?: CacheMode | undefined;
  /** -r: throttle writes to the target to this many bytes per second (0 or absent: none). */
  rateLimit?: number | undefined;
  onWarning?: (message: string) => void;
  /** Progress in percent (0..100), as qemu-img -p reports it. */
  onProgress?: (percent: number) => void;
  signal?: AbortSignal;
}

function fail(message: string): never {
  throw new InvalidArgumentError(message);
}

/** The flag combinations qemu-img refuses, in its order and words. */
export function validateConvertOptions(o: ConvertOptions): void {
  const explicitSparse = o.sparseSize !== undefined;
  if (o.skipBrokenBitmaps && !o.bitmaps) fail('Use of --skip-broken-bitmaps requires --bitmaps');
  if (o.compress && o.copyRange) fail('Cannot enable copy offloading when -c is used');
  if (explicitSparse && o.copyRange) fail('Cannot enable copy offloading when -S is used');
  if (o.copyRange && o.salvage) fail('Cannot use copy offloading in salvaging mode');
  if (o.existingTarget && o.options) fail('-o has no effect when skipping image creation');
  if (o.targetIsZero && !o.existingTarget) fail('--target-is-zero requires use of -n flag');
  if (
    o.sparseSize !== undefined &&
    (o.sparseSize % SECTOR !== 0 || o.sparseSize / SECTOR > MAX_BUF_SECTORS)
  ) {
    fail(
      'Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).',
    );
  }
  if (
    o.coroutines !== undefined &&
    (o.coroutines < 1 || o.coroutines > 16 || !Number.isInteger(o.coroutines))
  ) {
    fail('Invalid number of coroutines. Allowed number of coroutines is between 1 and 16');
  }
  if (o.sources.length < 1) fail('Must specify image file name');
}

export async function convertImages(o: ConvertOptions): Promise<void> {
  validateConvertOptions(o);
  const targetFormat = o.targetFormat ?? 'raw';
  const sources: BlockDevice[] = [];
  let target: BlockDevice | undefined;
  let targetCreated = false;
  let reserveAhead: ReserveAheadOptions | undefined;
  let freshTarget = false; // created here, nothing allocated (CopyPlan.freshTarget)
  try {
    for (const name of o.sources) {
      sources.push(
        await openImage(name, {
          format: o.sourceFormat,
          readOnly: true,
          // 2 MiB chunk reads go to the thread pool, in parallel with the writes (as QEMU's
          // aio=threads); metadata reads stay synchronous page-cache hits.
          syncReadMax: SYNC_READ_MAX,
        }),
      );
    }
    if (o.snapshot !== undefined) {
      if (sources.length > 1) fail('No support for concatenating multiple snapshot');
      const src = sources[0]!;
      if (!isQcow2(src))
        throw new NotSupportedError(
          'Failed to load snapshot: This image format does not support snapshots',
        );
      try {
        if (typeof o.snapshot === 'string') await src.loadSnapshotByIdOrName(o.snapshot);
        else await src.loadSnapshotTmp(o.snapshot.id, o.snapshot.name);
      } catch (err) {
        throw withContext(err, 'Failed to load snapshot');
      }
    }
    const sourceSectors = sources.map((s) => Math.ceil(s.size / SECTOR));
    const totalSectors = sourceSectors.reduce((a, b) => a + b, 0);

    // Target creation (skipped with -n).
    let targetHasBacking = o.backingFile !== undefined;
    if (!o.existingTarget) {
      const lists = createOptionLists(targetFormat);
      if (!lists) fail(`Unknown file format '${targetFormat}'`);
      const opts = new QemuOpts(lists.all);
      if (o.options) opts.parse(o.options);
      opts.set('size', String(totalSectors * SECTOR));
      if (o.backingFile !== undefined) {
        if (targetFormat === 'raw')
          fail(`Backing file not supported for file format '${targetFormat}'`);
        opts.set('backing_file', o.backingFile);
      }
      if (o.backingFormat !== undefined) {
        if (targetFormat === 'raw')
          fail(`Backing file format not supported for file format '${targetFormat}'`);
        opts.set('backing_fmt', o.backingFormat);
      }
      targetHasBacking = opts.has('backing_file');
      if (sources.length > 1 && targetHasBacking) {
        fail(
          'Having a backing file for the target makes no sense when concatenating multiple input images',
        );
      }
      if (targetHasBacking && !opts.has('backing_fmt'))
        fail('Use of backing file requires explicit backing format');
      if (o.compress) {
        if (targetFormat !== 'qcow2') fail('Compression not supported for this file format');
        if (opts.has('encryption') || opts.has('encrypt.format')) {
          fail('Compression and encryption not supported at the same time');
        }
        const prealloc = opts.str('preallocation');
        if (prealloc && prealloc !== 'off')
          fail('Compression and preallocation not supported at the same time');
      }
      // [bitmaps] checked before the target is created, as qemu-img does.
      if (o.bitmaps) await checkConvertBitmaps(sources, o.skipBrokenBitmaps ?? false);
      try {
        const create = toCreateOptions(
          targetFormat as SupportedFormat,
          opts,
          totalSectors * SECTOR,
        );
        reserveAhead = reserveAheadFor(targetFormat, opts.str('preallocation'), totalSectors);
        freshTarget = (opts.str('preallocation') ?? 'off') === 'off';
        // A raw target's first block (QEMU's allocate_first_block) is written at close, in the
        // reserved space (ReserveAheadOptions.fill).
        await createImage(o.target, {
          ...create,
          unsafe: true,
          firstBlock: !reserveAhead?.fill,
          ...((o.cache ?? 'unsafe') === 'unsafe' ? { cache: 'unsafe' as const } : {}),
        });
        targetCreated = true;
      } catch (err) {
        throw withContext(err, `${o.target}: error while converting ${targetFormat}`);
      }
    } else if (o.targetIsZero && targetHasBacking) {
      fail('Cannot use --target-is-zero when the destination image has a backing file');
    }
    // [bitmaps] the same check when the target exists (-n).
    if (o.existingTarget && o.bitmaps)
      await checkConvertBitmaps(sources, o.skipBrokenBitmaps ?? false);

    const cache = o.cache ?? 'unsafe';
    if (cache === 'none' || cache === 'directsync') {
      o.onWarning?.(
        `cache mode '${cache}' needs O_DIRECT, which vmforge cannot use; writing through the page cache`,
      );
    }
    target = await openImage(o.target, {
      format: targetFormat as SupportedFormat,
      readOnly: false,
      // Writes are serialized (in order) and nothing else waits on the event loop: they skip
      // the thread-pool round trip, while the source reads run on the pool.
      syncWriteMax: SYNC_WRITE_MAX,
      ...(reserveAhead ? { reserveAhead } : {}),
      ...(cache === 'unsafe' ? { cache: 'unsafe' as const } : {}),
      ...(cache === 'writethrough' || cache === 'directsync'
        ? { cache: 'writethrough' as const }
        : {}),
    });
    if (o.bitmaps) checkBitmapsTarget(target); // [bitmaps]
    if (o.existingTarget && Math.ceil(target.size / SECTOR) < totalSectors) {
      fail('output file is smaller than input file');
    }
    if (o.compress && !isQcow2(target)) fail('Compression not supported for this file format');
    if (targetHasBacking && o.existingTarget === false && target.backing === undefined) {
      // The backing file could not be opened: only an optimisation is lost (QEMU: length unknown).
    }

    const minSparse = (o.sparseSize ?? 4096) / SECTOR;
    const clusterSize = isQcow2(target) ? target.layout.clusterSize : 0;
    const discardAlign = isQcow2(target) ? clusterSize : 0;
    const bufSectors = Math.min(MAX_BUF_SECTORS, Math.max(IO_BUF_SECTORS, discardAlign / SECTOR));
    const plan: CopyPlan = {
      sources,
      sourceSectors,
      sourceAlignment: sources.map((s) => (isQcow2(s) ? s.layout.clusterSize / SECTOR : 1)),
      target,
      totalSectors,
      minSparse,
      alignment: Math.max(minSparse ? 2 ** Math.floor(Math.log2(minSparse)) : 0, 1),
      bufSectors: o.compress ? clusterSize / SECTOR : bufSectors,
      targetHasBacking,
      targetBackingSectors:
        targetHasBacking && targetCreated && target.backing
          ? Math.ceil(target.backing.size / SECTOR)
          : -1,
      hasZeroInit:
        (o.targetIsZero ?? false) ||
        (targetCreated && minSparse > 0 && !targetHasBacking && target.capabilities.zeroInit),
      freshTarget: targetCreated && freshTarget && !targetHasBacking,
      compressed: o.compress ?? false,
      clusterSectors: clusterSize / SECTOR,
      workers: o.coroutines ?? 8,
      inOrder: !o.outOfOrder,
      salvage: o.salvage ?? false,
      mapSources: !o.compress,
      throttle: o.rateLimit ? new LeakyBucket(o.rateLimit) : undefined,
      onWarning: o.onWarning,
      signal: o.signal,
    };
    let allocated = 0;
    if (o.onProgress) {
      allocated = await countAllocated(plan);
      o.onProgress(0);
      // Reported after every chunk; the CLI decides what to print (qemu prints on 1% moves).
      plan.onProgress = (done, total) => o.onProgress?.(total ? (100 * done) / total : 100);
    }
    // A raw or new qcow2 file target is copied by the native loop as far as it can; the rest
    // by runCopy().
    const nativeTarget = nativeCopyTarget(plan);
    const resume = nativeTarget
      ? await runNativeCopy(plan, nativeTarget, allocated)
      : { sector: 0, done: 0 };
    if (resume) await runCopy(plan, allocated, resume);
    if (plan.compressed && isQcow2(target)) await target.alignFileEnd();
    // [bitmaps] after the data, so the copy itself dirties nothing; stored when target closes.
    if (o.bitmaps) {
      await copyBitmaps(sources[0]!, target, {
        skipBroken: o.skipBrokenBitmaps ?? false,
        onWarning: o.onWarning,
      });
    }
    o.onProgress?.(100);
    await target.close();
    target = undefined;
  } catch (err) {
    if (target) await target.close().catch(() => undefined);
    // A target we created and could not finish is removed (Ctrl-C included): a partial image
    // is worse than none. An existing target (-n) is left as it is.
    if (targetCreated) await rm(o.target, { force: true }).catch(() => undefined);
    throw err;
  } finally {
    for (const s of sources) await s.close().catch(() => undefined);
  }
}

/**
 * Only for a target this convert created, where everything it does not write must stay
 * unallocated: qcow2 (reserving from its end of file on) and raw without preallocation (all
 * holes but the first block, which creation allocates as QEMU's allocate_first_block does).
 * Never for -n: a target's existing data must not be punched out.
 */
function reserveAheadFor(
  format: string,
  preallocation: string | undefined,
  sectors: number,
): ReserveAheadOptions | undefined {
  if (format === 'qcow2') return { span: RESERVE_SPAN, maxSpan: RESERVE_SPAN_MAX };
  if (format === 'raw' && (preallocation ?? 'off') === 'off' && sectors > 0) {
    return {
      span: RESERVE_SPAN,
      maxSpan: RESERVE_SPAN_MAX,
      unallocatedFrom: 0,
      fill: [[0, firstBlockLength(sectors * SECTOR)]],
    };
  }
  return undefined;
}

/** [bitmaps] convert_check_bitmaps() for the one source --bitmaps allows. */
async function checkConvertBitmaps(sources: BlockDevice[], skipBroken: boolean): Promise<void> {
  if (sources.length > 1) fail('Copying bitmaps only possible with single source');
  await checkBitmapsCopyable(sources[0]!, skipBroken);
}
