// `qemu-img check` for qcow2, as QEMU 7.2 does it (block/qcow2.c qcow2_co_check_locked):
// read the snapshot table, check (and with `repair`, fix) the refcounts and COPIED flags, fix
// the snapshot table, then mark a fully repaired image clean and consistent. Also the automatic
// `check -r all` a dirty lazy-refcounts image gets when it is opened read-write.
//
// Diagnostics are the lines QEMU prints on stderr, byte for byte and in order; library code
// never prints them, it returns them (and streams them through `onMessage`).

import { CorruptImageError, InvalidArgumentError } from '../../core/index.js';
import { INCOMPAT_CORRUPT, INCOMPAT_DIRTY } from '../constants.js';
import type { Qcow2Device } from '../qcow2-device.js';
import { checkRefcounts } from './check-refcounts.js';
import { CheckContext, deviceCheckState } from './context.js';
import { checkFixSnapshotTable, checkReadSnapshotTable, toEngineSnapshots } from './snapshots.js';
import {
  CheckAbort,
  emptyCounts,
  fixModeOf,
  strerror,
  type CheckCounts,
  type CheckErrno,
  type CheckMessage,
  type FixMode,
} from './types.js';

export { validateBitmapsOnOpen } from './bitmaps.js';
export {
  FIX_ERRORS,
  FIX_LEAKS,
  fixModeOf,
  strerror,
  type CheckCounts,
  type CheckErrno,
  type CheckMessage,
  type FixMode,
  type FragInfo,
} from './types.js';

export interface Qcow2CheckOptions {
  /** Repair leaks only (`-r leaks`) or everything QEMU repairs (`-r all`). Needs a writable device. */
  repair?: 'leaks' | 'all' | undefined;
}

export interface Qcow2CheckHooks {
  /** Called with each diagnostic line as it is found. */
  onMessage?: ((message: CheckMessage) => void) | undefined;
}

/** BdrvCheckResult plus the diagnostics, and the errno when the check could not complete. */
export interface Qcow2CheckReport extends CheckCounts {
  messages: CheckMessage[];
  /** Set when the check failed (QEMU returned -errno; qemu-img prints "Check failed: ..."). */
  failure?: { errno: CheckErrno; message: string };
}

/** qcow2_add_check_result(). */
function addResult(out: CheckCounts, src: CheckCounts, setAllocationInfo: boolean): void {
  out.corruptions += src.corruptions;
  out.leaks += src.leaks;
  out.checkErrors += src.checkErrors;
  out.corruptionsFixed += src.corruptionsFixed;
  out.leaksFixed += src.leaksFixed;
  if (setAllocationInfo) {
    out.imageEndOffset = src.imageEndOffset;
    out.bfi = { ...src.bfi };
  }
}

/**
 * Check a qcow2 image (and repair it with `repair`). The device must have been opened with
 * `checkMode` when it may be damaged (so the snapshot table is read here, not at open), and
 * read-write to repair. Never throws for problems in the image: they are counted and described.
 */
export async function checkQcow2(
  device: Qcow2Device,
  options: Qcow2CheckOptions = {},
  hooks: Qcow2CheckHooks = {},
): Promise<Qcow2CheckReport> {
  return checkWithMode(device, fixModeOf(options.repair), hooks);
}

export async function checkWithMode(
  device: Qcow2Device,
  fix: FixMode,
  hooks: Qcow2CheckHooks = {},
): Promise<Qcow2CheckReport> {
  if (fix && device.readOnly) {
    throw new InvalidArgumentError(`Cannot repair '${device.filename}': it was opened read-only`);
  }
  const messages: CheckMessage[] = [];
  const emit = (m: CheckMessage): void => {
    messages.push(m);
    hooks.onMessage?.(m);
  };
  const result = emptyCounts();
  const finish = (err?: unknown): Qcow2CheckReport => {
    if (err === undefined) return { ...result, messages };
    if (!(err instanceof CheckAbort)) throw err;
    return { ...result, messages, failure: { errno: err.errno, message: strerror(err.errno) } };
  };

  // bdrv_co_check() on a node whose driver is gone (a fatal corruption was signaled).
  if (deviceCheckState(device).unusable) return finish(new CheckAbort('ENOMEDIUM'));

  // What the device cached should be on disk: the check reads tables from the file directly.
  // (If that write-back fails, the check meets the failure where it reads, as QEMU does.)
  if (!device.readOnly) await device.flush().catch(() => undefined);

  return device.withExclusiveLock(async () => {
    const ctx = new CheckContext(device, emit);
    try {
      await ctx.init();
      return finish(await checkLocked(ctx, result, fix));
    } catch (err) {
      return finish(err);
    } finally {
      await settleDevice(ctx);
    }
  });
}

/** qcow2_co_check_locked(); throws CheckAbort on failure, with `result` filled as QEMU fills it. */
async function checkLocked(
  ctx: CheckContext,
  result: CheckCounts,
  fix: FixMode,
): Promise<undefined> {
  const snapshotRes = emptyCounts();
  const refcountRes = emptyCounts();
  try {
    await checkReadSnapshotTable(ctx, snapshotRes, fix);
  } catch (err) {
    addResult(result, snapshotRes, false);
    throw err;
  }
  try {
    await checkRefcounts(ctx, refcountRes, fix);
  } catch (err) {
    addResult(result, refcountRes, true);
    addResult(result, snapshotRes, false);
    throw err;
  }
  addResult(result, refcountRes, true);
  try {
    await checkFixSnapshotTable(ctx, snapshotRes, fix);
  } finally {
    addResult(result, snapshotRes, false);
  }
  if (fix && result.checkErrors === 0 && result.corruptions === 0) {
    await markClean(ctx);
    await markConsistent(ctx);
  }
  return undefined;
}

/** qcow2_flush_caches(). */
async function flushCaches(ctx: CheckContext): Promise<void> {
  try {
    await ctx.device.l2Cache.flush();
    await ctx.device.refcounts.cache.flush();
    await ctx.storage.flush();
  } catch {
    throw new CheckAbort('EIO');
  }
}

/** qcow2_mark_clean(): clear the dirty bit once everything is on disk. */
async function markClean(ctx: CheckContext): Promise<void> {
  const h = ctx.device.header;
  if ((h.incompatibleFeatures & INCOMPAT_DIRTY) === 0n) return;
  h.incompatibleFeatures &= ~INCOMPAT_DIRTY;
  await flushCaches(ctx);
  await rewriteHeader(ctx);
}

/** qcow2_mark_consistent(): clear the corrupt bit. */
async function markConsistent(ctx: CheckContext): Promise<void> {
  const h = ctx.device.header;
  if ((h.incompatibleFeatures & INCOMPAT_CORRUPT) === 0n) return;
  await flushCaches(ctx);
  h.incompatibleFeatures &= ~INCOMPAT_CORRUPT;
  await rewriteHeader(ctx);
}

/** qcow2_update_header(). */
async function rewriteHeader(ctx: CheckContext): Promise<void> {
  try {
    await ctx.device.rewriteHeader();
  } catch {
    throw new CheckAbort('EIO');
  }
}

/** Leave the device consistent with what the check did to the file. */
async function settleDevice(ctx: CheckContext): Promise<void> {
  const device = ctx.device;
  // The check read and wrote L2 tables behind the cache's back.
  device.l2Cache.clear();
  if (ctx.unusable) {
    // QEMU drops the node: nothing it still had cached reaches the disk.
    device.refcounts.cache.clear();
  }
  device.snapshots.splice(0, device.snapshots.length, ...toEngineSnapshots(ctx));
}

/**
 * The repair QEMU runs when a dirty image (lazy refcounts, writer killed) is opened read-write
 * (qcow2_do_open): `check -r all`, failing the open if the check had internal errors. Pass the
 * returned function as `repairDirty` when opening; `onMessage` receives the check's lines,
 * which QEMU prints on stderr while opening.
 */
export function dirtyImageRepair(
  onMessage?: (message: CheckMessage) => void,
): (device: Qcow2Device) => Promise<void> {
  return async (device) => {
    const report = await checkWithMode(device, FIX_LEAKS_AND_ERRORS, { onMessage });
    if (report.failure || report.checkErrors) {
      const errno: CheckErrno = report.failure?.errno ?? 'EIO';
      throw new CorruptImageError(`Could not repair dirty image: ${strerror(errno)}`, {
        code: 'VMF_QCOW2_DIRTY_REPAIR',
      });
    }
  };
}

const FIX_LEAKS_AND_ERRORS = fixModeOf('all');
