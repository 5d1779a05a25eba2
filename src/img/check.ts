// `qemu-img check`, format-independent (qemu-img.c img_check / collect_image_check): open the
// image the way qemu-img does for a check (read-only unless repairing, in check mode so broken
// tables still open), run the format's check, and when a repair fixed anything, check again
// without repairing and report that second result with the fixed counts of the first.
// Returns what qemu-img would print and its exit code; prints nothing itself.

import type { BlockDevice } from '../block/device.js';
import { openImage, type SupportedFormat } from '../image/open.js';
import { checkWithMode, validateBitmapsOnOpen } from '../qcow2/check/index.js';
import { errnoOf, fixModeOf, strerror, type CheckMessage } from '../qcow2/check/types.js';
import type { Qcow2Device } from '../qcow2/qcow2-device.js';
import { withContext } from '../core/index.js';
import type { ImageCheck } from './qapi-types.js';

export type { CheckMessage } from '../qcow2/check/types.js';

export interface CheckImageOptions {
  /** Image format (-f); probed when absent. */
  format?: SupportedFormat | undefined;
  /** `-r leaks` / `-r all`: repair, opening the image read-write. */
  repair?: 'leaks' | 'all' | undefined;
  /**
   * `-T`: how writes reach the file (QEMU's cache modes; default writeback). 'none' and
   * 'directsync' need O_DIRECT, which vmforge does not use: they behave as writeback and
   * writethrough, with a warning.
   */
  cache?: 'none' | 'writeback' | 'writethrough' | 'directsync' | 'unsafe' | undefined;
  /** Each stderr line as it happens (open warnings, the check's diagnostics). */
  onMessage?: ((message: CheckImageMessage) => void) | undefined;
  /**
   * Called between the repairing check and the re-check, where qemu-img prints (human output
   * only) "The following inconsistencies were found and repaired: ...".
   */
  onRepaired?: ((fixed: RepairSummary) => void) | undefined;
}

/** A stderr line, tagged with the pass that produced it. */
export interface CheckImageMessage extends CheckMessage {
  /**
   * 'open' warnings, the first ('check') pass, the re-check after a repair ('recheck', which
   * also holds a failure to write back caches when the image is closed).
   */
  phase: 'open' | 'check' | 'recheck';
}

export interface RepairSummary {
  leaksFixed: number;
  corruptionsFixed: number;
}

export interface CheckImageOutcome {
  /** The result qemu-img prints (human or JSON); undefined when the check did not complete. */
  result: ImageCheck | undefined;
  /** Every stderr line, in order (error_report lines have `report: true`). */
  messages: CheckImageMessage[];
  /** Set when a repair fixed something (qemu-img then re-checks). */
  repaired: RepairSummary | undefined;
  /** The final error_report() line without the program name, e.g. "Check failed". */
  error: string | undefined;
  /** 0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 no check for this format. */
  exitCode: 0 | 1 | 2 | 3 | 63;
}

interface Counts {
  checkErrors: number;
  corruptions: number;
  leaks: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset: number;
  bfi: {
    totalClusters: number;
    allocatedClusters: number;
    fragmentedClusters: number;
    compressedClusters: number;
  };
}

/** collect_image_check(): an ImageCheck with each optional count present only when non-zero. */
export function imageCheckOf(filename: string, format: string, c: Counts): ImageCheck {
  const check: ImageCheck = { filename, format, 'check-errors': c.checkErrors };
  const opt = (
    key: Exclude<keyof ImageCheck, 'filename' | 'format' | 'check-errors'>,
    v: number,
  ) => {
    if (v !== 0) check[key] = v;
  };
  opt('image-end-offset', c.imageEndOffset);
  opt('corruptions', c.corruptions);
  opt('leaks', c.leaks);
  opt('corruptions-fixed', c.corruptionsFixed);
  opt('leaks-fixed', c.leaksFixed);
  opt('total-clusters', c.bfi.totalClusters);
  opt('allocated-clusters', c.bfi.allocatedClusters);
  opt('fragmented-clusters', c.bfi.fragmentedClusters);
  opt('compressed-clusters', c.bfi.compressedClusters);
  return check;
}

/**
 * Check `target` (a file name, or a device the caller opened: read-write to repair). Opening
 * errors are thrown (qemu-img: "Could not open ...", exit 1); everything else is in the outcome.
 */
export async function checkImage(
  target: string | BlockDevice,
  options: CheckImageOptions = {},
): Promise<CheckImageOutcome> {
  const messages: CheckImageMessage[] = [];
  const emit = (m: CheckMessage, phase: CheckImageMessage['phase']): void => {
    const tagged: CheckImageMessage = { ...m, phase };
    messages.push(tagged);
    options.onMessage?.(tagged);
  };
  const fix = fixModeOf(options.repair);
  const filename = typeof target === 'string' ? target : target.filename;

  let device: BlockDevice;
  if (typeof target === 'string') {
    const cache = options.cache ?? 'writeback';
    if (cache === 'none' || cache === 'directsync') {
      emit(
        {
          text: `vmforge-img: warning: cache mode '${cache}' needs O_DIRECT, which vmforge cannot use; going through the page cache`,
        },
        'open',
      );
    }
    device = await openImage(target, {
      format: options.format,
      // img_check: BDRV_O_CHECK, plus BDRV_O_RDWR with -r.
      readOnly: fix === 0,
      checkMode: true,
      onWarning: (text) => emit({ text }, 'open'),
      ...(cache === 'unsafe' ? { cache: 'unsafe' as const } : {}),
      ...(cache === 'writethrough' || cache === 'directsync'
        ? { cache: 'writethrough' as const }
        : {}),
    });
  } else {
    device = target;
  }

  try {
    if (device.format !== 'qcow2') {
      return fail(messages, 'This image format does not support checks', 63);
    }
    const qcow2 = device as Qcow2Device;
    if (typeof target === 'string') {
      // qcow2_do_open() loads persistent bitmaps: a broken directory fails the open.
      try {
        await validateBitmapsOnOpen(qcow2);
      } catch (err) {
        throw withContext(err, `Could not open '${filename}'`);
      }
    }
    const first = await checkWithMode(qcow2, fix, { onMessage: (m) => emit(m, 'check') });
    if (first.failure) return fail(messages, `Check failed: ${first.failure.message}`, 1);

    let counts: Counts = first;
    let repaired: RepairSummary | undefined;
    if (first.corruptionsFixed || first.leaksFixed) {
      repaired = { leaksFixed: first.leaksFixed, corruptionsFixed: first.corruptionsFixed };
      options.onRepaired?.(repaired);
      const second = await checkWithMode(qcow2, 0, { onMessage: (m) => emit(m, 'recheck') });
      if (second.failure) {
        return { ...fail(messages, `Check failed: ${second.failure.message}`, 1), repaired };
      }
      counts = { ...second, ...repaired };
    }
    const result = imageCheckOf(filename, 'qcow2', counts);
    let exitCode: CheckImageOutcome['exitCode'];
    let error: string | undefined;
    if (counts.checkErrors) {
      exitCode = 1;
      error = 'Check failed';
    } else if (counts.corruptions) exitCode = 2;
    else if (counts.leaks) exitCode = 3;
    else exitCode = 0;
    return { result, messages, repaired, error, exitCode };
  } finally {
    if (typeof target === 'string') {
      try {
        await device.close();
      } catch (err) {
        // qcow2_close() reports a failed write-back and qemu-img keeps its exit code. (vmforge's
        // device writes its refcount cache back first, so that is what failed.)
        emit(
          {
            text: `Failed to flush the refcount block cache: ${strerror(errnoOf(err))}`,
            report: true,
          },
          'recheck',
        );
      }
    }
  }
}

function fail(messages: CheckImageMessage[], error: string, exitCode: 1 | 63): CheckImageOutcome {
  return { result: undefined, messages, repaired: undefined, error, exitCode };
}
